use cmk::Encrypted;

#[derive(Encrypted)]
pub enum Note {
    A,
}

fn main() {}
