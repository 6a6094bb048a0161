fn main() {
    std::process::exit(smtp_auth_proxy::cli::main(std::env::args_os().skip(1)));
}
