use cmk::Encrypted;

#[derive(Encrypted)]
#[cmk(table = "notes", tenant = tenant_id)]
pub struct Note {
    pub id: i64,
    pub tenant_id: String,
    #[cmk(class = "private")]
    pub body: String,
}

fn main() {
    let _ = <Note as cmk::model::Encrypted>::TABLE;
    let _: Option<SealedNote> = None;
}
