// A future passed to `scope_async` would be built (and, for some futures, partly run)
// before the scope starts: only a closure that builds it inside the scope compiles.
use std::sync::Arc;

async fn handler(keys: Arc<cmk::TenantKeys>) {
    let work = async { 1 };
    let _ = keys.scope_async(work).await;
}

fn main() {
    let _ = handler;
}
