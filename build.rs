// `sqlx::migrate!` embeds `migrations/` at compile time, but cargo does not know to rebuild
// when a migration file is added or changed; this tells it (as `sqlx migrate build-script` does).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
