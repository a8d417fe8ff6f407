use cmk::Encrypted;

#[derive(Encrypted)]
#[cmk(table = "notes", tenant = tenant_id, id = id, ids = "app")]
pub struct Note {
    pub id: f64,
    pub tenant_id: String,
    #[cmk(class = "private")]
    pub body: String,
}

fn main() {}
