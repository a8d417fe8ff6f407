use cmk::Encrypted;

#[derive(Encrypted)]
#[cmk(table = "notes", tenant = tenant_id)]
pub struct Note {
    pub tenant_id: i64,
    #[cmk(class = "private")]
    pub body: String,
}

fn main() {}
