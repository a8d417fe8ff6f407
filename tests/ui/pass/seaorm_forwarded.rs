pub mod account {
    use cmk::Encrypted;
    use sea_orm::entity::prelude::*;

    #[derive(Debug, Clone, PartialEq, Encrypted)]
    #[sea_orm(table_name = "accounts")]
    #[cmk(tenant = org, id = id, ids = "app")]
    pub struct Account {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub org: String,
        #[cmk(class = "secret", blind_index)]
        pub iban: Option<String>,
        #[cmk(class = "secret", column = "holder_name")]
        pub holder: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn main() {
    use sea_orm::EntityTrait;
    let _ = account::Entity::find().into_model::<account::Account>();
    let _: Option<account::Model> = None;
}
