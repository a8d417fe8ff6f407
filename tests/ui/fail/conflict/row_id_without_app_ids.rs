use cmk::Encrypted;

fn row_id(id: &i64) -> cmk::model::RowId {
    cmk::model::RowId::Int(*id)
}

#[derive(Encrypted)]
#[cmk(table = "notes", tenant = tenant_id, id = id, row_id = row_id)]
pub struct Note {
    pub id: i64,
    pub tenant_id: String,
    #[cmk(class = "private")]
    pub body: String,
}

fn main() {}
