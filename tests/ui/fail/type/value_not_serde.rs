use cmk::Encrypted;

/// Neither `Serialize` nor `Deserialize`.
#[derive(Debug, Clone)]
pub struct Salary {
    pub cents: u64,
}

#[derive(Encrypted)]
#[cmk(table = "staff", tenant = tenant_id)]
pub struct Staff {
    pub tenant_id: String,
    #[cmk(class = "restricted")]
    pub salary: Salary,
}

fn main() {}
