//! Where the library's own queries get a connection.

use std::sync::Mutex;

use crate::store::StoreConnection;

/// Lends a connection to the registry and configuration store. Both run their queries on
/// tokio's blocking pool, so a source may block.
///
/// Give cmk a source of its own (its own connection, or a pool): `cmk.keys_for(..).await`
/// may query the registry, and would wait forever for a connection that the awaiting code
/// itself holds locked.
pub trait ConnectionSource: Send + Sync + 'static {
    /// The connection type.
    type Connection: StoreConnection;

    /// Runs `f` with a connection.
    ///
    /// # Errors
    /// The error `f` returns; [`cmk_core::Error::Database`] when the source cannot lend a
    /// connection (an r2d2 pool that times out).
    fn with_connection<R>(
        &self,
        f: impl FnOnce(&mut Self::Connection) -> cmk_core::Result<R>,
    ) -> cmk_core::Result<R>;
}

/// One connection, used by one query at a time (SQLite files, tests, tools).
impl<C: StoreConnection> ConnectionSource for Mutex<C> {
    type Connection = C;

    fn with_connection<R>(
        &self,
        f: impl FnOnce(&mut C) -> cmk_core::Result<R>,
    ) -> cmk_core::Result<R> {
        // A panic while the lock was held leaves no half-written state behind (every write
        // is one statement), so a poisoned lock is still usable.
        let mut conn = self.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut conn)
    }
}

/// An r2d2 pool (Diesel's feature `r2d2`).
#[cfg(feature = "r2d2")]
impl<C> ConnectionSource for diesel::r2d2::Pool<diesel::r2d2::ConnectionManager<C>>
where
    C: StoreConnection + diesel::r2d2::R2D2Connection,
{
    type Connection = C;

    fn with_connection<R>(
        &self,
        f: impl FnOnce(&mut C) -> cmk_core::Result<R>,
    ) -> cmk_core::Result<R> {
        let mut conn = self
            .get()
            .map_err(|e| cmk_core::Error::Database(std::sync::Arc::new(e)))?;
        f(&mut conn)
    }
}

/// Runs `f` with a connection of `source` on tokio's blocking pool: Diesel blocks, and an
/// async caller must not.
pub(crate) async fn run_blocking<S, R>(
    source: &std::sync::Arc<S>,
    f: impl FnOnce(&mut S::Connection) -> cmk_core::Result<R> + Send + 'static,
) -> cmk_core::Result<R>
where
    S: ConnectionSource,
    R: Send + 'static,
{
    let source = std::sync::Arc::clone(source);
    tokio::task::spawn_blocking(move || source.with_connection(f))
        .await
        .map_err(|e| cmk_core::Error::Database(std::sync::Arc::new(e)))?
}

/// A Diesel error as cmk's.
pub(crate) fn db(e: diesel::result::Error) -> cmk_core::Error {
    cmk_core::Error::Database(std::sync::Arc::new(e))
}
