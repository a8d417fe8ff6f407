use cmk::Encrypted;

#[derive(Encrypted)]
#[cmk(table = "notes", tenant = tenant_id)]
pub struct Note<T> {
    pub tenant_id: String,
    #[cmk(class = "private")]
    pub body: T,
}

fn main() {}
