//! What the web examples share: a users table with a blind-indexed email, a plaintext posts
//! table to join it with, the embedded cmk set-up, and the Diesel work of each route (run on
//! a blocking thread with the request's keys).

use std::path::Path;
use std::sync::{Arc, Mutex};

use cmk::diesel::ops;
use cmk::embedded::Embedded;
use cmk::{
    Actor, Encrypted, Policy, RequestContext, SearchMode, TenantConfig, TenantId, TenantKeys,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    users (id) {
        id -> BigInt,
        tenant_id -> Text,
        email -> CiphertextSql,
        email_bidx -> BlindIndexSql,
        bio -> Nullable<CiphertextSql>,
        private_keys -> Nullable<KeyColumnSql>,
    }
}

diesel::table! {
    posts (id) {
        id -> BigInt,
        tenant_id -> Text,
        author_id -> BigInt,
        title -> Text,
    }
}

diesel::joinable!(posts -> users (author_id));
diesel::allow_tables_to_appear_in_same_query!(users, posts);

/// A user: the email is searchable through its blind index; email and bio are encrypted.
#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = users)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
pub(crate) struct User {
    pub id: i64,
    pub tenant_id: String,
    #[cmk(class = "private", blind_index(normalize = "casefold"))]
    pub email: String,
    #[cmk(class = "private")]
    pub bio: Option<String>,
}

/// A post (nothing classified).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = posts)]
pub struct Post {
    pub id: i64,
    pub tenant_id: String,
    pub author_id: i64,
    pub title: String,
}

/// The JSON of a user, in and out.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct UserJson {
    pub id: i64,
    pub email: String,
    pub bio: Option<String>,
}

/// The JSON of a post with its author, as the join loads them.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PostJson {
    pub title: String,
    pub author_email: String,
}

/// The application's database: one connection for the example (a pool in production).
pub(crate) type Db = Arc<Mutex<SqliteConnection>>;

/// The classes the routes read and write.
pub(crate) const CLASSES: &[&str] = User::CLASSES;

/// cmk (embedded, in `dir`) with tenants `acme` and `globex`, and the application's
/// database with its tables.
pub(crate) async fn setup(dir: &Path) -> Result<(Embedded, Db), Box<dyn std::error::Error>> {
    let embedded = Embedded::open(dir)?;
    for tenant in ["acme", "globex"] {
        let tenant = TenantId::new(tenant)?;
        let key = embedded.tenant_key(&tenant)?;
        let private = Policy::new(key.clone()).with_search(SearchMode::BlindIndex);
        let config = TenantConfig::new(tenant.clone(), key).with_class("private", private)?;
        embedded
            .cmk()
            .ensure_tenant(&RequestContext::new(tenant), &config)
            .await?;
    }
    let mut conn = SqliteConnection::establish(&dir.join("app.sqlite3").to_string_lossy())?;
    conn.batch_execute(
        "PRAGMA busy_timeout = 5000;
         CREATE TABLE IF NOT EXISTS users (id BIGINT NOT NULL, tenant_id TEXT NOT NULL,
             email BLOB NOT NULL, email_bidx BLOB NOT NULL, bio BLOB, private_keys BLOB,
             PRIMARY KEY (id));
         CREATE UNIQUE INDEX IF NOT EXISTS users_email ON users (tenant_id, email_bidx);
         CREATE TABLE IF NOT EXISTS posts (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL,
             author_id BIGINT NOT NULL REFERENCES users (id), title TEXT NOT NULL);",
    )?;
    Ok((embedded, Arc::new(Mutex::new(conn))))
}

/// The request's context from its headers: `x-tenant` (required), `x-user`, `x-role`
/// (comma-separated) and `x-request-id`. The example trusts the headers; an application
/// takes the tenant and actor from its verified session or token.
pub(crate) fn context_from_headers<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
) -> cmk::Result<RequestContext> {
    let tenant = header("x-tenant")
        .ok_or_else(|| cmk::Error::InvalidInput("the x-tenant header is missing".into()))?;
    let mut ctx = RequestContext::new(TenantId::new(tenant)?);
    if let Some(user) = header("x-user") {
        ctx = ctx.with_actor(Actor::User(user.into()));
    }
    for role in header("x-role")
        .unwrap_or_default()
        .split(',')
        .filter(|r| !r.is_empty())
    {
        ctx = ctx.with_role(role.trim());
    }
    if let Some(id) = header("x-request-id") {
        ctx = ctx.with_request_id(id);
    }
    Ok(ctx)
}

/// The answer of `GET /whoami`: what repository code deep in the request finds in the key
/// scope the middleware entered, without being passed anything.
pub(crate) fn whoami() -> cmk::Result<String> {
    let keys = cmk::rows::current_keys()?;
    let ctx = keys.context();
    Ok(format!(
        "{} {} {}",
        ctx.tenant(),
        ctx.actor().map(Actor::label).unwrap_or_default(),
        ctx.request_id().unwrap_or_default()
    ))
}

fn lock(db: &Db) -> std::sync::MutexGuard<'_, SqliteConnection> {
    db.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `POST /users`.
pub(crate) fn create_user(db: &Db, keys: &TenantKeys, user: UserJson) -> cmk::Result<()> {
    let user = User {
        id: user.id,
        tenant_id: keys.tenant().to_string(),
        email: user.email,
        bio: user.bio,
    };
    ops::insert(&mut *lock(db), keys, &user)?;
    Ok(())
}

/// `GET /users/by-email/{email}`: plaintext in, the tenant constrained by the lookup.
pub(crate) fn user_by_email(
    db: &Db,
    keys: &TenantKeys,
    email: &str,
) -> cmk::Result<Option<UserJson>> {
    let query = users::table.filter(User::by_email(keys, email.as_bytes())?);
    let found: Vec<User> = ops::load_all(&mut *lock(db), keys, query)?;
    Ok(found.into_iter().next().map(|u| UserJson {
        id: u.id,
        email: u.email,
        bio: u.bio,
    }))
}

/// `POST /users/{id}/posts`.
pub(crate) fn add_post(
    db: &Db,
    keys: &TenantKeys,
    author_id: i64,
    title: String,
) -> cmk::Result<()> {
    let post = (
        posts::tenant_id.eq(keys.tenant().as_str()),
        posts::author_id.eq(author_id),
        posts::title.eq(title),
    );
    diesel::insert_into(posts::table)
        .values(post)
        .execute(&mut *lock(db))
        .map_err(cmk::diesel::Error::from)?;
    Ok(())
}

/// `GET /users/{id}/posts`: posts joined with their author, the plaintext `User` loaded by
/// plain Diesel inside the key scope of this (blocking) thread.
pub(crate) fn posts_of(
    db: &Db,
    keys: &Arc<TenantKeys>,
    author_id: i64,
) -> cmk::Result<Vec<PostJson>> {
    let rows: Vec<(Post, User)> = keys
        .scope(|| {
            posts::table
                .inner_join(users::table)
                .filter(posts::tenant_id.eq(keys.tenant().as_str()))
                .filter(posts::author_id.eq(author_id))
                .order(posts::id)
                .select((Post::as_select(), User::as_select()))
                .load(&mut *lock(db))
        })
        .map_err(cmk::diesel::Error::from)?;
    Ok(rows
        .into_iter()
        .map(|(post, author)| PostJson {
            title: post.title,
            author_email: author.email,
        })
        .collect())
}
