//! The error context: every mistake in the input is collected, so the user sees them all at
//! once, each at the token that is wrong.

use std::cell::RefCell;
use std::fmt::Display;

use proc_macro2::Span;

/// Collects errors while the input is parsed and checked. It must be consumed with
/// [`Ctxt::check`]: dropping it unchecked with errors in it is a bug of the derive (an error
/// would be lost), and panics.
pub(crate) struct Ctxt {
    errors: RefCell<Option<Vec<syn::Error>>>,
}

impl Ctxt {
    pub(crate) fn new() -> Self {
        Ctxt {
            errors: RefCell::new(Some(Vec::new())),
        }
    }

    /// Records an error at `span`.
    pub(crate) fn error(&self, span: Span, message: impl Display) {
        self.syn_error(syn::Error::new(span, message));
    }

    /// Records an error syn reported.
    pub(crate) fn syn_error(&self, error: syn::Error) {
        if let Some(errors) = self.errors.borrow_mut().as_mut() {
            errors.push(error);
        }
    }

    /// Whether any error was recorded so far.
    pub(crate) fn has_errors(&self) -> bool {
        self.errors.borrow().as_ref().is_some_and(|e| !e.is_empty())
    }

    /// All the errors recorded, combined into one, or `Ok`.
    pub(crate) fn check(self) -> syn::Result<()> {
        let errors = self.errors.borrow_mut().take().unwrap_or_default();
        let mut all = errors.into_iter();
        let Some(mut combined) = all.next() else {
            return Ok(());
        };
        for e in all {
            combined.combine(e);
        }
        Err(combined)
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        // A context dropped with errors unreported would compile a wrong model silently.
        #[allow(clippy::panic)]
        if !std::thread::panicking() && self.has_errors() {
            panic!("cmk-derive: errors were collected but never checked");
        }
    }
}
