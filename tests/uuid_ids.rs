//! Models with UUID ids (feature `uuid`): the id is bound into every ciphertext, so a row
//! moved under another id fails to read.
#![cfg(feature = "uuid")]

mod common;

use cmk::{Encrypted, Error, SearchMode};

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[cmk(table = "users", tenant = tenant_id, id = id, ids = "app")]
struct User {
    id: uuid::Uuid,
    tenant_id: String,
    #[cmk(class = "private")]
    bio: String,
}

#[tokio::test]
async fn a_uuid_id_is_bound_into_the_ciphertext() {
    let (cmk, ctx) = common::onboarded(SearchMode::None, &[], |_, _| {}).await;
    let keys = cmk.keys_for(&ctx, User::CLASSES).await.unwrap();
    let user = User {
        id: uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
        tenant_id: "acme".into(),
        bio: "hello".into(),
    };
    let sealed = user.seal(&keys).unwrap();
    assert_eq!(User::unseal(&sealed, &keys).unwrap(), user);
    let mut moved = sealed.clone();
    moved.id = uuid::Uuid::from_u128(2);
    assert!(matches!(User::unseal(&moved, &keys), Err(Error::Tampered)));
}
