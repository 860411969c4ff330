fn main() {
    let a: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&a[2]).unwrap();
    tsm_fuzz::TARGETS.iter().find(|t| t.0 == a[1]).unwrap().1(&data);
}
