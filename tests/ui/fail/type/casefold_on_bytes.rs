use cmk::Encrypted;

#[derive(Encrypted)]
#[cmk(table = "notes", tenant = tenant_id)]
pub struct Note {
    pub tenant_id: String,
    #[cmk(class = "private", blind_index(normalize = "casefold"))]
    pub body: Vec<u8>,
}

fn main() {}
