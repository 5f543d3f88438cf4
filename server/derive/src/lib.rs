//! Row mapping for the Vespene store: `#[derive(FromRow)]` reads a struct
//! from a database row, `#[derive(ToColumns)]` lists the columns to write
//! for it, so each column is named once, by its field; `#[derive(Patch)]`
//! makes the struct's typed change (`<Name>Patch`), the fields a client may
//! set, each an `Option`.
//!
//! The derives are for the `vespene` crate's store only: the code they
//! generate names `crate::store::row` (the traits `FromRow`, `ToColumns` and
//! `Column` and `RowRead`, the `Cols` list) and `crate::store::Result`.
//!
//! # What a field becomes
//!
//! A field is the column of the same name. How its value is read and written
//! follows its type, through the store's `Column` trait: times
//! (`DateTime<Utc>`) are epoch milliseconds, booleans are read from a
//! PostgreSQL `BOOLEAN` or a SQLite integer, a NULL text reads as `""` into a
//! `String`, a `Secret` is sealed with the store's cipher on write (and left
//! out when it is `Stored`, so the stored value is kept) and read as `Stored`
//! or `Empty`, never in clear. A field named `id` is read but never written:
//! the database assigns it.
//!
//! # Field attributes
//!
//! All in `#[row(...)]`, combined with commas:
//!
//! - `skip`: not a column (link-table ids, filled by the caller); read as
//!   `Default::default()`, never written.
//! - `read_only`: read, never written (columns another part of the store
//!   keeps, such as a project's build pointers).
//! - `kept`: written with the record, but kept by the server, not set by
//!   clients (who made it, when it was last built). `FromRow::KEPT` lists
//!   these, the `read_only` ones and `id`: the fields the API refuses.
//! - `column = "name"`: the column's name when it is not the field's.
//! - `masked`: a `variables` JSON object whose secret values are read masked
//!   (`secret_vars::mask`); sealing them on write is the store's save path.
//! - `json_default = "{}"`: written as this when blank.
//! - `read = path`: the value is `path(stored)`, `stored` being the column
//!   read as `path`'s parameter type (`fn(String) -> Vec<String>`).
//! - `write = path`: the value written is `path(&field)`, of the field's own
//!   type (`fn(&str) -> String` trimming a `String`, for example).
//!
//! `read` and `write` paths are resolved where the struct is defined.
//!
//! # Example
//!
//! A stage, a few of its fields shown:
//!
//! ```ignore
//! #[derive(FromRow, ToColumns)]
//! pub struct Stage {
//!     pub id: i64,                        // read only
//!     pub name: String,                   // "name"
//!     #[row(masked, json_default = "{}")]
//!     pub variables: String,
//!     #[row(skip)]                        // the stage_variable_sets table
//!     pub variable_set_ids: Vec<i64>,
//!     pub approval_required: bool,        // BOOLEAN or 0/1
//! }
//! ```
//!
//! generates, in substance (and `#[derive(Patch)]` a `StagePatch` with
//! `name: Option<String>`, `variables: Option<String>`, ... and no `id`):
//!
//! ```ignore
//! impl FromRow for Stage {
//!     const COLUMNS: &'static str = "id, name, variables, approval_required";
//!     const KEPT: &'static [&'static str] = &["id"];
//!     fn from_row<R: RowRead + ?Sized>(row: &R) -> Result<Self> {
//!         Ok(Self {
//!             id: Column::read(row, "id")?,
//!             name: Column::read(row, "name")?,
//!             variables: secret_vars::mask(&<String as Column>::read(row, "variables")?),
//!             variable_set_ids: Default::default(),
//!             approval_required: Column::read(row, "approval_required")?,
//!         })
//!     }
//! }
//! impl ToColumns for Stage {
//!     fn columns(&self, secrets: &dyn SecretCipher) -> Result<Cols> {
//!         // ("name", ..), ("variables", json_default(..)), ("approval_required", ..)
//!     }
//! }
//! ```

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::{parse_macro_input, Attribute, Data, DeriveInput, Fields, Ident, LitStr, Path, Type};

/// Implements the store's `FromRow` for a struct with named fields: one
/// `from_row` reading each field from its column, and `COLUMNS`, the
/// comma-separated list of the columns read (for a `SELECT` that must not
/// read `*`). See the crate documentation for the `#[row(...)]` attributes.
#[proc_macro_derive(FromRow, attributes(row))]
pub fn derive_from_row(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input, from_row).unwrap_or_else(|e| e.to_compile_error()).into()
}

/// Implements the store's `ToColumns` for a struct with named fields: the
/// `(column, value)` pairs an INSERT or UPDATE writes, every field but `id`,
/// `skip` and `read_only` ones. See the crate documentation for the
/// `#[row(...)]` attributes.
#[proc_macro_derive(ToColumns, attributes(row))]
pub fn derive_to_columns(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input, to_columns).unwrap_or_else(|e| e.to_compile_error()).into()
}

/// Implements the store's `Patchable` for a struct with named fields and
/// makes its typed change, `<Name>Patch`: one `Option` per field a client may
/// set (every field but `id`, `read_only` and `kept` ones), read from a
/// request's JSON fields (each through the field's own `serde(with)` or
/// `serde(deserialize_with)`, so the JSON documents read as they do on the
/// struct) and applied to a stored or default object. A kept field is refused
/// as read-only, any other unknown one as unknown, naming the allowed fields.
#[proc_macro_derive(Patch, attributes(row))]
pub fn derive_patch(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input, patch).unwrap_or_else(|e| e.to_compile_error()).into()
}

/// One field and what its `#[row(...)]` attributes say.
struct Field {
    ident: Ident,
    ty: Type,
    /// Its doc comment and the `serde` attributes that say how its value is read.
    docs: Vec<Attribute>,
    reads_with: Vec<Tokens>,
    column: LitStr,
    skip: bool,
    read_only: bool,
    kept: bool,
    masked: bool,
    json_default: Option<LitStr>,
    read: Option<Path>,
    write: Option<Path>,
}

fn expand(input: &DeriveInput, generate: fn(&DeriveInput, &[Field]) -> Tokens) -> syn::Result<Tokens> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(&input.ident, "rows map to structs only"));
    };
    let Fields::Named(named) = &data.fields else {
        return Err(syn::Error::new_spanned(&input.ident, "rows map to structs with named fields only"));
    };
    let fields = named.named.iter().map(parse_field).collect::<syn::Result<Vec<_>>>()?;
    Ok(generate(input, &fields))
}

fn parse_field(f: &syn::Field) -> syn::Result<Field> {
    let ident = f.ident.clone().expect("named field");
    let mut field = Field {
        ty: f.ty.clone(),
        docs: f.attrs.iter().filter(|a| a.path().is_ident("doc")).cloned().collect(),
        reads_with: serde_readers(&f.attrs)?,
        column: LitStr::new(&ident.to_string(), ident.span()),
        read_only: false,
        kept: false,
        ident,
        skip: false,
        masked: false,
        json_default: None,
        read: None,
        write: None,
    };
    for attr in f.attrs.iter().filter(|a| a.path().is_ident("row")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                field.skip = true;
            } else if meta.path.is_ident("read_only") {
                field.read_only = true;
            } else if meta.path.is_ident("kept") {
                field.kept = true;
            } else if meta.path.is_ident("masked") {
                field.masked = true;
            } else if meta.path.is_ident("column") {
                field.column = meta.value()?.parse()?;
            } else if meta.path.is_ident("json_default") {
                field.json_default = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("read") {
                field.read = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("write") {
                field.write = Some(meta.value()?.parse()?);
            } else {
                return Err(meta.error(
                    "unknown row attribute; expected skip, read_only, kept, column, masked, json_default, read or write",
                ));
            }
            Ok(())
        })?;
        // Combinations that would silently drop one of their halves.
        let conflict = |what: &str| Err(syn::Error::new_spanned(attr, what));
        let other = field.read_only
            || field.kept
            || field.masked
            || field.json_default.is_some()
            || field.read.is_some()
            || field.write.is_some();
        if field.skip && other {
            return conflict("`skip` is not a column: it takes no other row attribute");
        }
        if field.kept && field.read_only {
            return conflict("`read_only` fields are kept by the server already: keep `read_only`");
        }
        if field.masked && field.read.is_some() {
            return conflict("`masked` and `read` both say how to read: keep one");
        }
        if field.json_default.is_some() && field.write.is_some() {
            return conflict("`json_default` and `write` both say what to write: keep one");
        }
    }
    // The database assigns ids.
    field.read_only |= field.ident == "id" && !field.skip;
    Ok(field)
}

/// The `with = ...` and `deserialize_with = ...` parts of a field's
/// `#[serde(...)]` attributes: how its value is read from JSON.
fn serde_readers(attrs: &[Attribute]) -> syn::Result<Vec<Tokens>> {
    let mut found = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("with") || meta.path.is_ident("deserialize_with") {
                let path = meta.path.clone();
                let value: LitStr = meta.value()?.parse()?;
                found.push(quote!(#path = #value));
            } else if meta.input.peek(syn::Token![=]) {
                // Other attributes (`default = "..."`) say nothing about reading a sent value.
                let _: syn::Expr = meta.value()?.parse()?;
            }
            Ok(())
        })?;
    }
    Ok(found)
}

fn patch(input: &DeriveInput, fields: &[Field]) -> Tokens {
    let name = &input.ident;
    let vis = &input.vis;
    let patch = quote::format_ident!("{}Patch", name);
    let settable: Vec<&Field> = fields.iter().filter(|f| !f.read_only && !f.kept).collect();
    let names: Vec<String> = settable.iter().map(|f| f.ident.to_string()).collect();
    let kept = fields.iter().filter(|f| f.read_only || f.kept).map(|f| f.ident.to_string());
    let members = settable.iter().map(|f| {
        let (ident, ty, docs) = (&f.ident, &f.ty, &f.docs);
        quote!(#(#docs)* pub #ident: ::core::option::Option<#ty>)
    });
    let reads = settable.iter().map(|f| {
        let (ident, ty, reads_with) = (&f.ident, &f.ty, &f.reads_with);
        let key = ident.to_string();
        let how = if reads_with.is_empty() { quote!() } else { quote!(#[serde(#(#reads_with),*)]) };
        quote! {
            #key => {
                #[derive(::serde::Deserialize)]
                struct Sent(#how #ty);
                patch.#ident = ::core::option::Option::Some(
                    crate::store::patch::field_value::<Sent>(&key, value, what)?.0,
                );
            }
        }
    });
    let applies = settable.iter().map(|f| {
        let ident = &f.ident;
        quote!(if let ::core::option::Option::Some(v) = self.#ident { to.#ident = v; })
    });
    let creator = match fields.iter().find(|f| f.ident == "created_by") {
        Some(_) => quote!(self.created_by = ::core::option::Option::Some(user);),
        None => quote!(let _ = user;),
    };
    let doc =
        format!("A change to a [`{name}`]: each field a client may set, `None` where the change leaves it as it is.");
    quote! {
        #[doc = #doc]
        #[derive(Debug, Clone, Default)]
        #vis struct #patch { #(#members),* }

        impl crate::store::patch::Patch for #patch {
            type Object = #name;
            const FIELDS: &'static [&'static str] = &[#(#names),*];
            fn from_fields(
                body: ::serde_json::Map<::std::string::String, ::serde_json::Value>,
                what: &str,
            ) -> ::core::result::Result<Self, crate::store::ValidationError> {
                let mut patch = Self::default();
                for (key, value) in body {
                    match key.as_str() {
                        #(#reads)*
                        _ => {
                            return ::core::result::Result::Err(crate::store::patch::refused(
                                &key,
                                what,
                                &[#(#kept),*],
                                Self::FIELDS,
                            ))
                        }
                    }
                }
                ::core::result::Result::Ok(patch)
            }
            fn apply(self, to: &mut #name) {
                #(#applies)*
            }
        }

        impl crate::store::patch::Patchable for #name {
            type Patch = #patch;
            fn set_creator(&mut self, user: i64) {
                #creator
            }
        }
    }
}

fn from_row(input: &DeriveInput, fields: &[Field]) -> Tokens {
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let inits = fields.iter().map(|f| {
        let ident = &f.ident;
        let column = &f.column;
        let value = if f.skip {
            quote!(::core::default::Default::default())
        } else if let Some(read) = &f.read {
            quote!(#read(crate::store::row::Column::read(row, #column)?))
        } else if f.masked {
            quote!(crate::store::secret_vars::mask(&<::std::string::String as crate::store::row::Column>::read(
                row, #column
            )?))
        } else {
            quote!(crate::store::row::Column::read(row, #column)?)
        };
        quote!(#ident: #value)
    });
    let columns = fields.iter().filter(|f| !f.skip).map(|f| f.column.value()).collect::<Vec<_>>().join(", ");
    let kept = fields.iter().filter(|f| f.read_only || f.kept).map(|f| f.ident.to_string());
    quote! {
        impl #impl_generics crate::store::row::FromRow for #name #ty_generics #where_clause {
            const COLUMNS: &'static str = #columns;
            const KEPT: &'static [&'static str] = &[#(#kept),*];
            fn from_row<R: crate::store::row::RowRead + ?Sized>(row: &R) -> crate::store::Result<Self> {
                ::core::result::Result::Ok(Self { #(#inits),* })
            }
        }
    }
}

fn to_columns(input: &DeriveInput, fields: &[Field]) -> Tokens {
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let written: Vec<&Field> = fields.iter().filter(|f| !f.skip && !f.read_only).collect();
    let capacity = written.len();
    let pushes = written.iter().map(|f| {
        let ident = &f.ident;
        let column = &f.column;
        let value = if let Some(write) = &f.write {
            quote!(&#write(&self.#ident))
        } else if let Some(empty) = &f.json_default {
            quote!(&crate::store::row::json_default(&self.#ident, #empty))
        } else {
            quote!(&self.#ident)
        };
        quote! {
            if let ::core::option::Option::Some(v) = crate::store::row::Column::write(#value, secrets)? {
                cols.push((#column, v));
            }
        }
    });
    quote! {
        impl #impl_generics crate::store::row::ToColumns for #name #ty_generics #where_clause {
            fn columns(
                &self,
                secrets: &dyn crate::store::SecretCipher,
            ) -> crate::store::Result<crate::store::row::Cols> {
                let mut cols = crate::store::row::Cols::with_capacity(#capacity);
                #(#pushes)*
                ::core::result::Result::Ok(cols)
            }
        }
    }
}
