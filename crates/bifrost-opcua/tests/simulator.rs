//! The OPC UA client against the simulator over loopback sockets: the set-up
//! (Hello, secure channel, session, the server's namespaces and limits), reads
//! split to MaxNodesPerRead, columns, typed writes and their refusals, and a
//! reconnect after the server drops the connection.

use bifrost_core::url::DeviceUrl;
use bifrost_core::{ErrorCode, Result, Value};
use bifrost_engine::listener::Faults;
use bifrost_engine::{Completion, Device, Outcome};
use bifrost_opcua::device::{OpcuaDevice, Opening};
use bifrost_opcua::server::{Simulator, SimulatorConfig};

async fn simulator(config: SimulatorConfig) -> Simulator {
    bifrost_opcua::server::start("127.0.0.1:0", config).await.unwrap()
}

fn requests(sim: &Simulator) -> u64 {
    sim.stats().requests.load(std::sync::atomic::Ordering::Relaxed)
}

async fn open(sim: &Simulator) -> OpcuaDevice {
    let url = format!("opc.tcp://127.0.0.1:{}/bifrost?request-timeout=5000", sim.local_addr().port());
    let opening = Opening::from_url(DeviceUrl::parse(&url).unwrap()).unwrap();
    let (framing, server) = opening.framing(bifrost_opcua::framing::Security::none());
    let driver = opening.open_runtime_driver(framing).await.unwrap();
    OpcuaDevice::new(driver, server)
}

async fn call(start: impl FnOnce(Box<dyn Completion>)) -> Outcome {
    let (sender, outcome) = tokio::sync::oneshot::channel();
    start(Box::new(move |o| drop(sender.send(o))));
    outcome.await.unwrap()
}

fn strings(tags: &[&str]) -> Vec<String> {
    tags.iter().map(|t| t.to_string()).collect()
}

async fn read(device: &OpcuaDevice, tags: &[&str]) -> Vec<Result<Value>> {
    match call(|done| device.read(&strings(tags), None, done)).await {
        Outcome::Values(values) => values.into_iter().map(|v| v.map(|typed| typed.value)).collect(),
        other => panic!("not values: {other:?}"),
    }
}

async fn write(device: &OpcuaDevice, writes: &[(&str, Value)]) -> Vec<Result<()>> {
    let writes = writes.iter().map(|(t, v)| (t.to_string(), v.clone())).collect();
    match call(|done| device.write(writes, None, done)).await {
        Outcome::Written(results) => results,
        other => panic!("not written: {other:?}"),
    }
}

#[tokio::test]
async fn reads_of_every_variable_type_and_the_servers_own_nodes() {
    let sim = simulator(SimulatorConfig::default()).await;
    let device = open(&sim).await;
    let values = read(&device, &["ns=1;s=V10", "ns=1;s=V11", "ns=1;s=V12", "ns=1;s=V13", "ns=1;s=V14", "i=2259"]).await;
    let values: Vec<Value> = values.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        values,
        [
            Value::Float(5.0),
            Value::Int(11),
            Value::Bool(false),
            Value::Float(3.25),
            Value::String("v14".into()),
            Value::Int(0)
        ]
    );
    let by_uri = read(&device, &["nsu=urn:bifrost:simulator;s=V20"]).await;
    assert_eq!(by_uri[0].as_ref().unwrap(), &Value::Float(10.0));
    let missing = read(&device, &["ns=1;s=V1000", "ns=1;s=Nope", "ns=1;x"]).await;
    let e = missing[0].as_ref().unwrap_err();
    assert_eq!((e.code, e.opcua.map(|s| s.name)), (ErrorCode::OpcuaStatus, Some("BadNodeIdUnknown")));
    assert_eq!(missing[2].as_ref().unwrap_err().code, ErrorCode::Address);
}

#[tokio::test]
async fn a_read_past_max_nodes_per_read_is_split_and_lands_in_order() {
    let sim = simulator(SimulatorConfig { variables: 500, max_nodes_per_read: 64, ..SimulatorConfig::default() }).await;
    let device = open(&sim).await;
    let before = requests(&sim);
    let tags: Vec<String> = (0..500).step_by(5).map(|i| format!("ns=1;s=V{i}")).collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let values = read(&device, &tags).await;
    assert_eq!(requests(&sim) - before, 2, "100 nodes in Reads of at most 64");
    for (at, value) in values.iter().enumerate() {
        assert_eq!(value.as_ref().unwrap(), &Value::Float(at as f64 * 2.5), "V{}", at * 5);
    }
    let plan = device.prepare(&strings(&tags)).unwrap();
    let Outcome::Columns(columns) = call(|done| plan.read(None, done)).await else { panic!() };
    assert!(columns.errors.is_empty(), "{:?}", columns.errors);
    assert_eq!(columns.values, (0..100).map(|at| at as f64 * 2.5).collect::<Vec<_>>());
}

#[tokio::test]
async fn writes_are_typed_by_the_nodes_data_type_and_refusals_name_their_status() {
    let sim = simulator(SimulatorConfig::default()).await;
    let device = open(&sim).await;
    let results = write(
        &device,
        &[
            ("ns=1;s=V1", Value::Float(-7.0)), // Int32
            ("ns=1;s=V3", Value::Float(1.5)),  // Float
            ("ns=1;s=V2", Value::Bool(true)),  // Boolean
            ("ns=1;s=V4", Value::String("x".into())),
            ("ns=1;s=V6", Value::Float(1.0)),  // Int32, read-only
            ("ns=1;s=V11", Value::Float(0.5)), // Int32: not a whole number
            ("i=2259", Value::Int(1)),         // the server's state
        ],
    )
    .await;
    let codes: Vec<_> = results.iter().map(|r| r.as_ref().err().map(|e| (e.code, e.opcua.map(|s| s.name)))).collect();
    assert_eq!(
        codes,
        [
            None,
            None,
            None,
            None,
            Some((ErrorCode::OpcuaStatus, Some("BadNotWritable"))),
            Some((ErrorCode::InvalidValue, None)),
            Some((ErrorCode::OpcuaStatus, Some("BadNotWritable"))),
        ]
    );
    let values = read(&device, &["ns=1;s=V1", "ns=1;s=V3", "ns=1;s=V2", "ns=1;s=V4", "ns=1;s=V6"]).await;
    let values: Vec<Value> = values.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        values,
        [Value::Int(-7), Value::Float(1.5), Value::Bool(true), Value::String("x".into()), Value::Int(6)]
    );
}

#[tokio::test]
async fn a_dropped_connection_is_set_up_afresh_with_a_new_session() {
    let faults = Faults { disconnect_after: 12, ..Faults::default() };
    let sim = simulator(SimulatorConfig { faults, ..SimulatorConfig::default() }).await;
    let device = open(&sim).await;
    let mut good = 0;
    for round in 0..30 {
        // A read may land on the connection as the server drops it: it fails alone, and the next one reconnects.
        match read(&device, &["ns=1;s=V10"]).await.remove(0) {
            Ok(value) => {
                assert_eq!(value, Value::Float(5.0), "round {round}");
                good += 1;
            }
            Err(e) => assert!(matches!(e.code, ErrorCode::ConnReset), "round {round}: {e:?}"),
        }
    }
    assert!(good >= 20, "{good} of 30 reads");
    assert!(device.stats().connects.load(std::sync::atomic::Ordering::Relaxed) >= 3);
}

async fn browse(device: &OpcuaDevice, from: Option<&str>) -> Result<Vec<bifrost_engine::TagInfo>> {
    match call(|done| device.browse(from, None, done)).await {
        Outcome::Browsed(listing) => listing,
        other => panic!("not a listing: {other:?}"),
    }
}

#[tokio::test]
async fn browse_lists_folders_then_variables_with_their_types_across_browse_next_pages() {
    let sim = simulator(SimulatorConfig { variables: 2500, ..SimulatorConfig::default() }).await;
    let device = open(&sim).await;
    let objects = browse(&device, None).await.unwrap();
    let names: Vec<_> =
        objects.iter().map(|t| (t.name.as_str(), t.data_type.as_str(), t.display_name.as_deref())).collect();
    assert_eq!(names, [("i=2253", "Object", Some("Server")), ("ns=1;s=Simulation", "Object", Some("Simulation"))]);
    let before = requests(&sim);
    let variables = browse(&device, Some("ns=1;s=Simulation")).await.unwrap();
    // 2,503 references in pages of 1,000: Browse, two BrowseNext; then the 2,502 variables' types
    // in one Read of 5,004 attributes, which goes in two chunks of 64 KiB (messages counted by chunk).
    assert_eq!(requests(&sim) - before, 5);
    assert_eq!(variables.len(), 2503);
    assert_eq!((variables[0].name.as_str(), variables[0].data_type.as_str()), ("ns=1;s=V0", "Double"));
    assert_eq!((variables[1].name.as_str(), variables[1].data_type.as_str()), ("ns=1;s=V1", "Int32"));
    assert_eq!((variables[2499].name.as_str(), variables[2499].data_type.as_str()), ("ns=1;s=V2499", "String"));
    assert_eq!(variables[2501].display_name.as_deref(), Some("Sine"));
    assert_eq!((variables[2502].name.as_str(), variables[2502].data_type.as_str()), ("ns=1;s=Add", "Method"));
    let server = browse(&device, Some("i=2253")).await.unwrap();
    assert_eq!(server.iter().find(|t| t.name == "i=2255").map(|t| t.data_type.as_str()), Some("String"));
    let missing = browse(&device, Some("ns=1;s=Nowhere")).await.unwrap_err();
    assert_eq!(missing.opcua.map(|s| s.name), Some("BadNodeIdUnknown"));
    assert_eq!(browse(&device, Some("ns=1;x")).await.unwrap_err().code, ErrorCode::Address);
    assert_eq!(read(&device, &["ns=1;s=V0"]).await[0].as_ref().unwrap(), &Value::Float(0.0), "the session still reads");
}

async fn call_method(device: &OpcuaDevice, object: &str, method: &str, args: Vec<Value>) -> Result<Value> {
    match call(|done| device.call(object, method, args, None, done)).await {
        Outcome::Values(mut values) => values.pop().unwrap().map(|typed| typed.value),
        other => panic!("not values: {other:?}"),
    }
}

#[tokio::test]
async fn a_method_call_types_its_arguments_by_the_methods_input_arguments() {
    let sim = simulator(SimulatorConfig { variables: 10, ..SimulatorConfig::default() }).await;
    let device = open(&sim).await;
    let add = |a: f64, b: f64| vec![Value::Float(a), Value::Float(b)];
    // JavaScript numbers go as Int32, as the method's InputArguments say: the simulator refuses any other type.
    assert_eq!(
        call_method(&device, "ns=1;s=Simulation", "ns=1;s=Add", add(2.0, 40.0)).await.unwrap(),
        Value::Array(vec![Value::Int(42)])
    );
    let before = requests(&sim);
    call_method(&device, "ns=1;s=Simulation", "ns=1;s=Add", add(1.0, 1.0)).await.unwrap();
    assert_eq!(requests(&sim) - before, 1, "the input types are kept for the session: one Call");
    let refused = call_method(&device, "ns=1;s=Simulation", "ns=1;s=Add", add(2_147_483_647.0, 1.0)).await.unwrap_err();
    assert_eq!(refused.opcua.map(|s| s.name), Some("BadOutOfRange"));
    let count = call_method(&device, "ns=1;s=Simulation", "ns=1;s=Add", vec![Value::Float(1.0)]).await.unwrap_err();
    assert_eq!(count.code, ErrorCode::InvalidValue, "{count:?}");
    let fraction = call_method(&device, "ns=1;s=Simulation", "ns=1;s=Add", add(1.5, 1.0)).await.unwrap_err();
    assert_eq!(fraction.code, ErrorCode::InvalidValue);
    let missing = call_method(&device, "ns=1;s=Simulation", "ns=1;s=Nope", add(1.0, 1.0)).await.unwrap_err();
    assert_eq!(missing.opcua.map(|s| s.name), Some("BadNodeIdUnknown"), "{missing:?}");
}

#[tokio::test]
async fn a_subscription_reports_changes_past_its_deadband_until_it_is_deleted() {
    use bifrost_engine::{Deadband, SubscribeOptions};
    let sim = simulator(SimulatorConfig { variables: 10, ..SimulatorConfig::default() }).await;
    let device = open(&sim).await;
    let writer = open(&sim).await;
    let (sender, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let sink: bifrost_engine::ChangeSink = std::sync::Arc::new(move |batch| drop(sender.send(batch)));
    let (ended_sender, ended) = tokio::sync::oneshot::channel();
    let options =
        SubscribeOptions { interval: std::time::Duration::from_millis(50), deadband: Some(Deadband::Absolute(0.5)) };
    let tags = strings(&["ns=1;s=V0", "ns=1;s=Nope"]);
    let subscription = device.subscribe(&tags, options, sink, Box::new(move |o| drop(ended_sender.send(o))));
    async fn next(
        changes: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<bifrost_engine::Change>>,
    ) -> Vec<bifrost_engine::Change> {
        tokio::time::timeout(std::time::Duration::from_secs(10), changes.recv()).await.unwrap().unwrap()
    }
    // The refused item first, then V0's value.
    let refused = next(&mut changes).await;
    assert_eq!(refused[0].0, 1);
    assert_eq!(refused[0].1.as_ref().unwrap_err().opcua.map(|s| s.name), Some("BadNodeIdUnknown"));
    let first = next(&mut changes).await;
    assert_eq!((first[0].0, first[0].1.as_ref().unwrap().value.clone()), (0, Value::Float(0.0)));
    assert!(first[0].2 > 1.7e12, "the server's timestamp, in ms since 1970");
    assert_eq!(
        read(&writer, &["i=2285"]).await[0].as_ref().unwrap(),
        &Value::UInt(1),
        "one subscription on the server"
    );
    write(&writer, &[("ns=1;s=V0", Value::Float(0.3))]).await; // within the deadband
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    write(&writer, &[("ns=1;s=V0", Value::Float(2.0))]).await;
    let moved = next(&mut changes).await;
    assert_eq!(moved[0].1.as_ref().unwrap().value, Value::Float(2.0), "0.3 stayed within the deadband");
    // A new interval (ModifySubscription, then ModifyMonitoredItems), then V0 no longer watched
    // (DeleteMonitoredItems); the refused tag was never watched.
    let (sender, modified) = tokio::sync::oneshot::channel();
    let faster = SubscribeOptions { interval: std::time::Duration::from_millis(100), deadband: None };
    subscription.modify(faster, None, Box::new(move |o| drop(sender.send(o))));
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), modified).await.unwrap().unwrap();
    assert!(
        matches!(outcome, Outcome::Values(ref v) if v[0].as_ref().unwrap().value == Value::Float(100.0)),
        "{outcome:?}"
    );
    let (sender, removed) = tokio::sync::oneshot::channel();
    subscription.remove(&[0, 1], None, Box::new(move |o| drop(sender.send(o))));
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), removed).await.unwrap().unwrap();
    let Outcome::Written(results) = outcome else { panic!("{outcome:?}") };
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(results[1].as_ref().unwrap_err().code, bifrost_core::ErrorCode::InvalidValue);
    write(&writer, &[("ns=1;s=V0", Value::Float(9.0))]).await;
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(500), changes.recv()).await;
    assert!(quiet.is_err(), "no change of a removed tag: {quiet:?}");
    subscription.end();
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), ended).await.unwrap().unwrap();
    assert!(matches!(outcome, Outcome::Values(ref v) if v[0].is_ok()), "{outcome:?}");
    assert_eq!(read(&writer, &["i=2285"]).await[0].as_ref().unwrap(), &Value::UInt(0), "deleted on the server");
    assert_eq!(read(&device, &["ns=1;s=V1"]).await[0].as_ref().unwrap(), &Value::Int(1), "the session still reads");
}
