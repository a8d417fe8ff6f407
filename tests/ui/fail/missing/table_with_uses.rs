// One mistake, one error: the application's own uses of the model add none.
use cmk::Encrypted;

#[derive(Encrypted)]
#[cmk(tenant = tenant_id)]
pub struct Note {
    pub tenant_id: String,
    #[cmk(class = "private")]
    pub body: String,
}

fn main() {
    let _ = Note::CLASSES;
    let _ = <Note as cmk::Encrypted>::schema();
}
