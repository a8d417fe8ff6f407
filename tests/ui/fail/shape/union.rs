use cmk::Encrypted;

#[derive(Encrypted)]
#[cmk(table = "notes", tenant = tenant_id)]
pub union Note {
    pub a: u32,
    pub b: f32,
}

fn main() {}
