//! The Logix client against the simulator over loopback sockets: connected and
//! unconnected messaging, packed reads, fragmented reads and writes, bits,
//! strings, statuses, and the set-up's fallbacks.

use std::time::Duration;

use bifrost_core::url::DeviceUrl;
use bifrost_core::{ErrorCode, Result, TypedValue, Value};
use bifrost_engine::{Completion, Device, Outcome};
use bifrost_enip::device::{EnipDevice, Opening};
use bifrost_enip::server::{parse_udt, Simulator, SimulatorConfig, TagSpec};

async fn simulator(tags: &[&str]) -> Simulator {
    with_udts(&[], tags).await
}

/// A simulator whose tags may be of the structure types `udts` define, in order.
async fn with_udts(udts: &[&str], tags: &[&str]) -> Simulator {
    let mut templates = Vec::new();
    for udt in udts {
        let template = parse_udt(udt, &templates).unwrap();
        templates.push(template);
    }
    let tags = tags.iter().map(|t| TagSpec::parse_with(t, &templates).unwrap()).collect();
    let config = SimulatorConfig { tags, udts: templates, ..SimulatorConfig::default() };
    bifrost_enip::server::start("127.0.0.1:0", config).await.unwrap()
}

fn requests(sim: &Simulator) -> u64 {
    sim.stats().requests.load(std::sync::atomic::Ordering::Relaxed)
}

async fn open(sim: &Simulator, query: &str) -> EnipDevice {
    let url = format!("eip://127.0.0.1:{}?{query}", sim.local_addr().port());
    let opening = Opening::from_url(DeviceUrl::parse(&url).unwrap()).unwrap();
    let (framing, negotiated) = opening.framing();
    let driver = opening.open_runtime_driver(framing).await.unwrap();
    EnipDevice::new(driver, negotiated)
}

async fn call(start: impl FnOnce(Box<dyn Completion>)) -> Outcome {
    let (sender, outcome) = tokio::sync::oneshot::channel();
    start(Box::new(move |o| drop(sender.send(o))));
    outcome.await.unwrap()
}

fn strings(tags: &[&str]) -> Vec<String> {
    tags.iter().map(|t| t.to_string()).collect()
}

async fn read(device: &EnipDevice, tags: &[&str]) -> Vec<Result<Value>> {
    match call(|done| device.read(&strings(tags), Some(Duration::from_secs(5)), done)).await {
        Outcome::Values(values) => values.into_iter().map(|v| v.map(|typed| typed.value)).collect(),
        other => panic!("not values: {other:?}"),
    }
}

async fn write(device: &EnipDevice, writes: &[(&str, Value)]) -> Vec<Result<()>> {
    let writes = writes.iter().map(|(t, v)| (t.to_string(), v.clone())).collect();
    match call(|done| device.write(writes, Some(Duration::from_secs(5)), done)).await {
        Outcome::Written(results) => results,
        other => panic!("not written: {other:?}"),
    }
}

const TAGS: &[&str] = &[
    "SCADA=INT[1000]",
    "Counter=DINT",
    "Temp=REAL",
    "Big=DINT[3000]",
    "Name=STRING",
    "Note=CIP_STRING",
    "L=LINT",
    "Flags=DINT",
    "Program:Main.Speed=REAL",
];

fn ints(values: impl IntoIterator<Item = i64>) -> Value {
    Value::Array(values.into_iter().map(Value::Int).collect())
}

#[tokio::test]
async fn reads_and_writes_every_kind_of_tag_connected_and_unconnected() {
    for query in ["path=1,0", "connected=false", "path=&connected=false", "path="] {
        let sim = simulator(TAGS).await;
        let device = open(&sim, query).await;
        let values = read(&device, &["SCADA[5]", "SCADA[10]{3}", "Counter", "Temp", "L", "Program:Main.Speed"]).await;
        assert_eq!(values[0], Ok(Value::Int(5)), "{query}");
        assert_eq!(values[1], Ok(ints([10, 11, 12])), "{query}");
        assert_eq!(values[2], Ok(Value::Int(0)));
        assert_eq!(values[3], Ok(Value::Float(0.0)));
        assert_eq!(values[5], Ok(Value::Float(0.0)));

        let written = write(
            &device,
            &[
                ("SCADA[5]", Value::Int(1234)),
                ("Counter", Value::Int(-7)),
                ("Temp", Value::Float(21.5)),
                ("L", Value::Int(i64::MIN)),
                ("Name", Value::String("Recipe A".into())),
                ("Note", Value::String("odd".into())),
                ("SCADA[20]{3}", ints([-1, -2, -3])),
            ],
        )
        .await;
        assert!(written.iter().all(Result::is_ok), "{query}: {written:?}");
        let values = read(&device, &["SCADA[5]", "Counter", "Temp", "L", "Name", "Note", "SCADA[20]{3}"]).await;
        assert_eq!(
            values,
            vec![
                Ok(Value::Int(1234)),
                Ok(Value::Int(-7)),
                Ok(Value::Float(21.5)),
                Ok(Value::Int(i64::MIN)),
                Ok(Value::String("Recipe A".into())),
                Ok(Value::String("odd".into())),
                Ok(ints([-1, -2, -3])),
            ],
            "{query}"
        );
        call(|done| device.close(done)).await;
    }
}

#[tokio::test]
async fn large_arrays_read_and_write_in_fragments() {
    for query in ["path=1,0", "connected=false"] {
        let sim = simulator(TAGS).await;
        let device = open(&sim, query).await;
        // 3000 DINTs (12,000 bytes) come in fragments of at most one connection's size.
        let before = sim.stats().requests.load(std::sync::atomic::Ordering::Relaxed);
        let big = read(&device, &["Big[0]{3000}"]).await;
        assert_eq!(big[0], Ok(ints(0..3000)), "{query}");
        let requests = sim.stats().requests.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert!(requests >= 3, "{query}: {requests} requests for 12,000 bytes");
        let written = write(&device, &[("Big[100]{2000}", ints((0..2000).map(|i| -i)))]).await;
        assert_eq!(written, vec![Ok(())], "{query}");
        let back = read(&device, &["Big[99]{2002}"]).await;
        let expected: Vec<i64> = std::iter::once(99).chain((0..2000).map(|i| -i)).chain([2100]).collect();
        assert_eq!(back[0], Ok(ints(expected)), "{query}");
        call(|done| device.close(done)).await;
    }
}

#[tokio::test]
async fn many_tags_pack_into_few_requests_and_a_bad_one_fails_alone() {
    let sim = simulator(TAGS).await;
    let device = open(&sim, "path=1,0").await;
    let tags: Vec<String> =
        (0..400).map(|i| format!("SCADA[{i}]")).chain(["Nope".to_string(), "SCADA[5000]".to_string()]).collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let before = sim.stats().requests.load(std::sync::atomic::Ordering::Relaxed);
    let values = read(&device, &tags).await;
    let requests = sim.stats().requests.load(std::sync::atomic::Ordering::Relaxed) - before;
    for (i, value) in values[..400].iter().enumerate() {
        assert_eq!(value, &Ok(Value::Int(i as i64)));
    }
    let unknown = values[400].clone().unwrap_err();
    assert_eq!((unknown.code, unknown.cip.map(|c| c.status)), (ErrorCode::CipStatus, Some(0x04)));
    let past = values[401].clone().unwrap_err();
    assert_eq!(past.cip.map(|c| (c.status, c.ext_status)), Some((0xFF, Some(0x2105))));
    assert!(past.message.contains("read of 'SCADA[5000]'"), "{}", past.message);
    // 402 reads of about 20 bytes each in 4002-byte packets: a handful of requests, not 402.
    assert!(requests <= 5, "{requests} requests");
}

#[tokio::test]
async fn bits_are_read_and_written_without_touching_their_neighbours() {
    let sim = simulator(TAGS).await;
    let device = open(&sim, "").await;
    assert_eq!(write(&device, &[("Flags", Value::Int(0b1010))]).await, vec![Ok(())]);
    assert_eq!(
        write(&device, &[("Flags.0", Value::Bool(true)), ("Flags.3", Value::Bool(false))]).await,
        vec![Ok(()), Ok(())]
    );
    assert_eq!(
        read(&device, &["Flags", "Flags.1", "Flags.3"]).await,
        vec![Ok(Value::Int(0b0011)), Ok(Value::Bool(true)), Ok(Value::Bool(false))]
    );
    let e = write(&device, &[("Temp.1", Value::Bool(true))]).await.remove(0).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidValue, "{}", e.message);
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_the_connection_keeps_working() {
    let sim = simulator(TAGS).await;
    let device = open(&sim, "path=1,0").await;
    let results = write(
        &device,
        &[
            ("Counter", Value::String("x".into())),
            ("SCADA[0]", Value::Int(70_000)),
            ("Nope", Value::Int(1)),
            ("Bad[", Value::Int(1)),
            ("SCADA[0]{2}", ints([1])),
        ],
    )
    .await;
    let codes: Vec<ErrorCode> = results.iter().map(|r| r.clone().unwrap_err().code).collect();
    assert_eq!(
        codes,
        [
            ErrorCode::InvalidValue,
            ErrorCode::InvalidValue,
            ErrorCode::CipStatus,
            ErrorCode::Address,
            ErrorCode::InvalidValue
        ]
    );
    assert_eq!(read(&device, &["Counter"]).await, vec![Ok(Value::Int(0))]);
}

#[tokio::test]
async fn prepared_plans_read_columns() {
    let sim = simulator(TAGS).await;
    let device = open(&sim, "path=1,0").await;
    let plan = device.prepare(&strings(&["SCADA[1]{3}", "Counter", "Flags.1", "Name"])).unwrap();
    assert_eq!(plan.value_count(), 6);
    let columns = match call(|done| plan.read(None, done)).await {
        Outcome::Columns(columns) => columns,
        other => panic!("{other:?}"),
    };
    assert_eq!(columns.offsets, [0, 3, 4, 5, 6]);
    assert_eq!(&columns.values[..5], &[1.0, 2.0, 3.0, 0.0, 0.0]);
    assert!(columns.values[5].is_nan());
    assert_eq!(columns.errors.len(), 1, "a STRING is not a number");
    assert_eq!(columns.errors[0].0, 3);
    assert!(device.prepare(&strings(&["Good", "Bad["])).is_err());
}

#[tokio::test]
async fn closing_sends_forward_close_and_unregister_session() {
    for (query, farewell) in [("path=1,0", 2), ("connected=false", 1)] {
        let sim = simulator(TAGS).await;
        let device = open(&sim, query).await;
        assert_eq!(read(&device, &["Counter"]).await, vec![Ok(Value::Int(0))]);
        let requests = || sim.stats().requests.load(std::sync::atomic::Ordering::Relaxed);
        let before = requests();
        call(|done| device.close(done)).await;
        for _ in 0..100 {
            if requests() >= before + farewell {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(requests(), before + farewell, "{query}: Forward Close (connected) and UnRegisterSession");
    }
}

/// `(name, value)` members of a structure value; the LINT member, `Total`, is wide.
fn structure(members: &[(&str, Value)]) -> Value {
    let typed = |n: &str, v: &Value| TypedValue { value: v.clone(), wide: n == "Total" };
    Value::Struct(members.iter().map(|(n, v)| (n.to_string(), typed(n, v))).collect())
}

#[tokio::test]
async fn structures_read_whole_by_their_template_read_once_and_their_members_by_path() {
    let udts = [
        "POINT=X:REAL,Y:REAL",
        "RECIPE=Temp:REAL,Speed:DINT,Steps:INT[4],Active:BOOL,Done:BOOL,Name:STRING,Origin:POINT,Total:LINT",
    ];
    let sim = with_udts(&udts, &["Recipe=RECIPE[3]", "Program:Main.Line=RECIPE", "Counter=DINT"]).await;
    for query in ["path=1,0", "connected=false"] {
        let device = open(&sim, query).await;
        let total = Value::Int(1 << 40);
        let written = write(
            &device,
            &[
                ("Recipe[2].Temp", Value::Float(71.5)),
                ("Recipe[2].Speed", Value::Int(1200)),
                ("Recipe[2].Steps[1]{2}", ints([7, -8])),
                ("Recipe[2].Done", Value::Bool(true)),
                ("Recipe[2].Name", Value::String("bread".into())),
                ("Recipe[2].Origin.Y", Value::Float(-1.5)),
                ("Recipe[2].Total", total.clone()),
                ("Program:Main.Line.Speed", Value::Int(5)),
            ],
        )
        .await;
        assert!(written.iter().all(Result::is_ok), "{query}: {written:?}");
        let before = requests(&sim);
        let values =
            read(&device, &["Recipe[2]", "Recipe[2].Origin", "Recipe[0]{2}", "Program:Main.Line", "Recipe[2].Done"])
                .await;
        let origin = structure(&[("X", Value::Float(0.0)), ("Y", Value::Float(-1.5))]);
        let recipe = structure(&[
            ("Temp", Value::Float(71.5)),
            ("Speed", Value::Int(1200)),
            ("Steps", ints([0, 7, -8, 0])),
            ("Active", Value::Bool(false)),
            ("Done", Value::Bool(true)),
            ("Name", Value::String("bread".into())),
            ("Origin", origin.clone()),
            ("Total", total.clone()),
        ]);
        assert_eq!(values[0], Ok(recipe), "{query}");
        assert_eq!(values[1], Ok(origin), "{query}");
        match &values[2] {
            Ok(Value::Array(two)) => assert_eq!(two.len(), 2, "{query}"),
            other => panic!("{query}: {other:?}"),
        }
        match &values[3] {
            Ok(Value::Struct(members)) => assert_eq!(members[1].1.value, Value::Int(5), "{query}"),
            other => panic!("{query}: {other:?}"),
        }
        assert_eq!(values[4], Ok(Value::Bool(true)), "{query}");
        // The templates and symbols are read once: a second read is the read alone.
        let first = requests(&sim) - before;
        let before = requests(&sim);
        assert!(read(&device, &["Recipe[2]"]).await[0].is_ok());
        assert_eq!(requests(&sim) - before, 1, "{query}: the first read took {first} requests");
        // A member that is not there is the controller's path error.
        let missing = read(&device, &["Recipe[2].Nope"]).await;
        assert_eq!(missing[0].as_ref().unwrap_err().cip.map(|c| c.status), Some(0x04), "{query}");
    }
}

#[tokio::test]
async fn bool_array_elements_are_bits_of_words_written_by_read_modify_write() {
    let sim = simulator(&["B=BOOL[64]", "SCADA=INT[10]"]).await;
    let bools = |bits: &[bool]| Value::Array(bits.iter().map(|&b| Value::Bool(b)).collect());
    for query in ["path=1,0", "connected=false"] {
        // A fresh device: B[1] names word 1 as written (it exists), B[40] a word past the end;
        // both are read again by the word holding them. Odd elements start on.
        let device = open(&sim, query).await;
        let values = read(&device, &["B[1]", "B[40]", "B[30]{4}", "SCADA[50]"]).await;
        assert_eq!(
            values[..3],
            [Ok(Value::Bool(true)), Ok(Value::Bool(false)), Ok(bools(&[false, true, false, true]))],
            "{query}"
        );
        let past = values[3].as_ref().unwrap_err();
        assert_eq!(past.cip.map(|c| (c.status, c.ext_status)), Some((0xFF, Some(0x2105))), "{query}: {past:?}");
        // Writes change only their BOOLs: one word, and a range across two.
        let written =
            write(&device, &[("B[40]", Value::Bool(true)), ("B[30]{4}", bools(&[true, false, false, true]))]).await;
        assert!(written.iter().all(Result::is_ok), "{query}: {written:?}");
        let fresh = open(&sim, query).await;
        let expected: Vec<bool> = (28..42)
            .map(|i| match i {
                30 | 33 | 40 => true,
                31 | 32 => false,
                i => i % 2 == 1,
            })
            .collect();
        assert_eq!(read(&fresh, &["B[28]{14}"]).await[0], Ok(bools(&expected)), "{query}");
        // And back, for the next round.
        let restored =
            write(&fresh, &[("B[40]", Value::Bool(false)), ("B[30]{4}", bools(&[false, true, false, true]))]).await;
        assert!(restored.iter().all(Result::is_ok), "{query}");
        let wrong = write(&fresh, &[("B[3]{2}", bools(&[true]))]).await;
        assert_eq!(wrong[0].as_ref().unwrap_err().code, ErrorCode::InvalidValue);
    }
}
