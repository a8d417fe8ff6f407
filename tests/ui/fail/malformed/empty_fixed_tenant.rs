use cmk::Encrypted;

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[cmk(table = "notes", tenant = "")]
pub struct Note {
    pub id: i64,
    #[cmk(class = "private")]
    pub body: String,
}

fn main() {}
