use cmk::Encrypted;

#[derive(Encrypted)]
pub struct Note {
    pub tenant_id: String,
    #[cmk(class = "private")]
    pub body: String,
}

fn main() {}
