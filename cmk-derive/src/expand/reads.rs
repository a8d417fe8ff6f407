//! Transparent reads: the plaintext model loaded straight from an ORM query, unsealed with the
//! keys of the current key scope.

use proc_macro2::TokenStream;
use quote::quote;

use super::Gen;

pub(super) fn transparent_reads(g: &Gen<'_>) -> TokenStream {
    if g.in_diesel {
        diesel_reads(g)
    } else if g.in_sea {
        sea_orm_reads(g)
    } else {
        quote!()
    }
}

fn diesel_reads(g: &Gen<'_>) -> TokenStream {
    let (name, sealed, p) = (g.name, &g.sealed, &g.p);
    quote! {
        /// Loads the plaintext model through any Diesel query: builds the sealed row, then
        /// unseals it with the keys of the current key scope (an error outside one).
        #[automatically_derived]
        impl<__ST, __DB> #p::diesel::deserialize::Queryable<__ST, __DB> for #name
        where
            __DB: #p::diesel::backend::Backend,
            #sealed: #p::diesel::deserialize::Queryable<__ST, __DB>,
        {
            type Row = <#sealed as #p::diesel::deserialize::Queryable<__ST, __DB>>::Row;
            fn build(row: Self::Row) -> #p::diesel::deserialize::Result<Self> {
                let sealed = <#sealed as #p::diesel::deserialize::Queryable<__ST, __DB>>::build(row)?;
                #p::unseal_in_scope::<Self>(&sealed).map_err(::std::convert::Into::into)
            }
        }

        #[automatically_derived]
        impl<__DB: #p::diesel::backend::Backend> #p::diesel::Selectable<__DB> for #name
        where
            #sealed: #p::diesel::Selectable<__DB>,
        {
            type SelectExpression = <#sealed as #p::diesel::Selectable<__DB>>::SelectExpression;
            fn construct_selection() -> Self::SelectExpression {
                <#sealed as #p::diesel::Selectable<__DB>>::construct_selection()
            }
        }
    }
}

fn sea_orm_reads(g: &Gen<'_>) -> TokenStream {
    let (name, sealed, p) = (g.name, &g.sealed, &g.p);
    quote! {
        /// Loads the plaintext model from any SeaORM query (`into_model`, related finds):
        /// builds the sealed row, then unseals it with the keys of the current key scope.
        /// A related row that fails to unseal is an error, never a silent `None`.
        #[automatically_derived]
        impl #p::sea_orm::FromQueryResult for #name {
            fn from_query_result(res: &#p::sea_orm::QueryResult, pre: &str) -> ::core::result::Result<Self, #p::sea_orm::DbErr> {
                let sealed = <#sealed as #p::sea_orm::FromQueryResult>::from_query_result(res, pre)?;
                #p::unseal_in_scope::<Self>(&sealed).map_err(#p::sea::db_err)
            }

            fn from_query_result_optional(res: &#p::sea_orm::QueryResult, pre: &str) -> ::core::result::Result<Option<Self>, #p::sea_orm::DbErr> {
                match <#sealed as #p::sea_orm::FromQueryResult>::from_query_result_nullable(res, pre) {
                    Ok(sealed) => #p::unseal_in_scope::<Self>(&sealed).map(Some).map_err(#p::sea::db_err),
                    Err(#p::sea_orm::TryGetError::Null(_)) => Ok(None),
                    Err(#p::sea_orm::TryGetError::DbErr(e)) => Err(e),
                }
            }

            fn from_query_result_nullable(res: &#p::sea_orm::QueryResult, pre: &str) -> ::core::result::Result<Self, #p::sea_orm::TryGetError> {
                let sealed = <#sealed as #p::sea_orm::FromQueryResult>::from_query_result_nullable(res, pre)?;
                #p::unseal_in_scope::<Self>(&sealed).map_err(|e| #p::sea_orm::TryGetError::DbErr(#p::sea::db_err(e)))
            }
        }
    }
}
