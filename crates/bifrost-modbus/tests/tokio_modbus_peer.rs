//! tokio-modbus as a third-party peer over real loopback sockets: its client
//! against our simulator, and its server for our pipelined client.

use std::future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bifrost_core::url::DeviceUrl;
use bifrost_core::{ErrorCode, Result, Value};
use bifrost_engine::{Completion, Device, Outcome};
use bifrost_modbus::device::{ModbusDevice, Opening};
use bifrost_modbus::server::{Simulator, SimulatorConfig};
use tokio_modbus::prelude::*;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};

async fn simulator(config: SimulatorConfig) -> (Simulator, SocketAddr) {
    let sim = bifrost_modbus::server::start("127.0.0.1:0", config).await.unwrap();
    let addr = sim.local_addr();
    (sim, addr)
}

/// Opens a device on the runtime-thread driver.
async fn open(url: &str) -> ModbusDevice {
    let opening = Opening::from_url(DeviceUrl::parse(url).unwrap()).unwrap();
    let driver = opening.open_runtime_driver().await.unwrap();
    opening.device(driver).unwrap()
}

/// Starts a call and waits for its outcome.
async fn call(start: impl FnOnce(Box<dyn Completion>)) -> Outcome {
    let (sender, outcome) = tokio::sync::oneshot::channel();
    start(Box::new(move |o| drop(sender.send(o))));
    outcome.await.unwrap()
}

fn strings(tags: &[&str]) -> Vec<String> {
    tags.iter().map(|t| t.to_string()).collect()
}

async fn read(device: &ModbusDevice, tags: &[&str], timeout: Option<Duration>) -> Vec<Result<Value>> {
    match call(|done| device.read(&strings(tags), timeout, done)).await {
        Outcome::Values(values) => values.into_iter().map(|v| v.map(|typed| typed.value)).collect(),
        other => panic!("not values: {other:?}"),
    }
}

#[tokio::test]
async fn tokio_modbus_client_reads_and_writes_our_simulator() {
    let (_sim, addr) = simulator(SimulatorConfig::default()).await;
    let mut ctx = tcp::connect_slave(addr, Slave(1)).await.unwrap();

    assert_eq!(ctx.read_holding_registers(10, 5).await.unwrap().unwrap(), vec![10, 11, 12, 13, 14]);
    assert_eq!(ctx.read_input_registers(65533, 3).await.unwrap().unwrap(), vec![65533, 65534, 65535]);
    assert_eq!(ctx.read_coils(4, 4).await.unwrap().unwrap(), vec![false, true, false, true]);
    assert_eq!(ctx.read_discrete_inputs(0, 3).await.unwrap().unwrap(), vec![false, true, false]);

    ctx.write_single_register(500, 0xBEEF).await.unwrap().unwrap();
    ctx.write_multiple_registers(501, &[1, 2, 3]).await.unwrap().unwrap();
    assert_eq!(ctx.read_holding_registers(500, 4).await.unwrap().unwrap(), vec![0xBEEF, 1, 2, 3]);

    ctx.write_single_coil(8, true).await.unwrap().unwrap();
    ctx.write_multiple_coils(20, &[true, true, false, true]).await.unwrap().unwrap();
    assert_eq!(ctx.read_coils(20, 4).await.unwrap().unwrap(), vec![true, true, false, true]);
    assert!(ctx.read_coils(8, 1).await.unwrap().unwrap()[0]);

    // FC22: result = (current AND and_mask) OR (or_mask AND NOT and_mask), spec example values.
    ctx.write_single_register(4, 0x12).await.unwrap().unwrap();
    ctx.masked_write_register(4, 0xF2, 0x25).await.unwrap().unwrap();
    assert_eq!(ctx.read_holding_registers(4, 1).await.unwrap().unwrap(), vec![0x17]);

    // FC23 writes before it reads.
    let read = ctx.read_write_multiple_registers(600, 3, 601, &[7, 8]).await.unwrap().unwrap();
    assert_eq!(read, vec![600, 7, 8]);

    let id = ctx.read_device_identification(ReadCode::Basic, 0).await.unwrap().unwrap();
    let objects: Vec<_> = id.device_id_objects.iter().map(|o| (o.id, o.value_as_str().unwrap().to_string())).collect();
    assert_eq!(objects[0], (0, "Bifrost".to_string()));
    assert_eq!(objects[1], (1, "BIFROST-SIM".to_string()));

    assert_eq!(ctx.read_holding_registers(65535, 2).await.unwrap(), Err(ExceptionCode::IllegalDataAddress));
    ctx.set_slave(Slave(99));
    assert_eq!(ctx.read_holding_registers(0, 1).await.unwrap(), Err(ExceptionCode::GatewayTargetDevice));
}

/// A tokio-modbus server with 1000 holding registers (register i = 3 * i) and 100 coils.
#[derive(Clone)]
struct Peer {
    registers: Arc<Mutex<Vec<u16>>>,
    coils: Arc<Mutex<Vec<bool>>>,
}

impl tokio_modbus::server::Service for Peer {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<std::result::Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let mut registers = self.registers.lock().unwrap();
        let mut coils = self.coils.lock().unwrap();
        let range = |addr: u16, n: usize, len: usize| {
            let (start, end) = (addr as usize, addr as usize + n);
            if end <= len {
                Ok(start..end)
            } else {
                Err(ExceptionCode::IllegalDataAddress)
            }
        };
        future::ready(match req {
            Request::ReadHoldingRegisters(addr, n) => {
                range(addr, n as usize, registers.len()).map(|r| Response::ReadHoldingRegisters(registers[r].to_vec()))
            }
            Request::WriteSingleRegister(addr, value) => range(addr, 1, registers.len()).map(|r| {
                registers[r.start] = value;
                Response::WriteSingleRegister(addr, value)
            }),
            Request::WriteMultipleRegisters(addr, values) => range(addr, values.len(), registers.len()).map(|r| {
                registers[r].copy_from_slice(&values);
                Response::WriteMultipleRegisters(addr, values.len() as u16)
            }),
            Request::ReadCoils(addr, n) => {
                range(addr, n as usize, coils.len()).map(|r| Response::ReadCoils(coils[r].to_vec()))
            }
            Request::WriteSingleCoil(addr, value) => range(addr, 1, coils.len()).map(|r| {
                coils[r.start] = value;
                Response::WriteSingleCoil(addr, value)
            }),
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

async fn tokio_modbus_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = Peer {
        registers: Arc::new(Mutex::new((0..1000).map(|i| (i * 3) as u16).collect())),
        coils: Arc::new(Mutex::new((0..100).map(|i| i % 4 == 0).collect())),
    };
    tokio::spawn(async move {
        let server = Server::new(listener);
        let on_connected = |stream, socket_addr| {
            let peer = peer.clone();
            async move { accept_tcp_connection(stream, socket_addr, move |_| Ok(Some(peer.clone()))) }
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    addr
}

#[tokio::test]
async fn our_client_against_a_tokio_modbus_server() {
    let addr = tokio_modbus_server().await;
    let device = open(&format!("modbus-tcp://{addr}?max-in-flight=8&max-gap=0")).await;

    let tags =
        ["holding-register:0:UINT[4]", "holding-register:100:DINT", "coil:0:BOOL[5]", "holding-register:999:UINT"];
    assert_eq!(
        read(&device, &tags, None).await,
        vec![
            Ok(Value::Array(vec![Value::UInt(0), Value::UInt(3), Value::UInt(6), Value::UInt(9)])),
            Ok(Value::Int(300 * 65536 + 303)),
            Ok(Value::Array([true, false, false, false, true].map(Value::Bool).to_vec())),
            Ok(Value::UInt(2997)),
        ]
    );

    let writes = vec![
        ("holding-register:10:REAL".to_string(), Value::Float(-1.5)),
        ("holding-register:20:UINT".to_string(), Value::UInt(7)),
        ("coil:3".to_string(), Value::Bool(true)),
    ];
    match call(|done| device.write(writes, None, done)).await {
        Outcome::Written(results) => assert!(results.iter().all(|r| r.is_ok()), "{results:?}"),
        other => panic!("not written: {other:?}"),
    }
    let read_back = read(&device, &["holding-register:10:REAL", "holding-register:20:UINT", "coil:3"], None).await;
    assert_eq!(read_back, vec![Ok(Value::Float(-1.5)), Ok(Value::UInt(7)), Ok(Value::Bool(true))]);

    // The peer refuses what it does not implement, and the connection carries on.
    let err = read(&device, &["input-register:0"], None).await.remove(0).unwrap_err();
    assert_eq!((err.code, err.exception_code), (ErrorCode::ModbusException, Some(1)));
    assert_eq!(read(&device, &tags, None).await[3], Ok(Value::UInt(2997)));
}

#[tokio::test]
async fn pipelined_requests_are_matched_by_transaction_id() {
    let (sim, addr) = simulator(SimulatorConfig::default()).await;
    let device = open(&format!("modbus-tcp://{addr}?max-in-flight=32")).await;
    // 5,000 calls queued before any reply is awaited, each its own request.
    let receivers: Vec<_> = (0..5000u16)
        .map(|i| {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            let done: Box<dyn Completion> = Box::new(move |o| drop(sender.send(o)));
            device.read(&[format!("holding-register:{i}:UINT[2]")], None, done);
            receiver
        })
        .collect();
    for (i, receiver) in receivers.into_iter().enumerate() {
        let Outcome::Values(mut values) = receiver.await.unwrap() else { panic!("not values") };
        let expected = Value::Array(vec![Value::UInt(i as u64), Value::UInt(i as u64 + 1)]);
        assert_eq!(values.remove(0).unwrap().value, expected);
    }
    assert_eq!(device.stats().unmatched.load(Ordering::Relaxed), 0);
    assert_eq!(sim.stats().requests.load(Ordering::Relaxed), 5000);
    call(|done| device.close(done)).await;
    let after = call(|done| device.read(&strings(&["holding-register:0"]), None, done)).await;
    assert!(matches!(after, Outcome::Closed), "{after:?}");
}

/// Lifts this process's descriptor limit so one test can hold thousands of sockets.
fn raise_fd_limit(wanted: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on a valid, initialised struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(wanted);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(limit.rlim_cur >= wanted, "descriptor limit {} is below the {wanted} this test needs", limit.rlim_cur);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_serves_thousands_of_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CONNECTIONS: usize = 3000;
    raise_fd_limit(2 * CONNECTIONS as u64 + 256);
    let (sim, addr) = simulator(SimulatorConfig::default()).await;
    let mut streams = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        streams.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // One request on every connection before any reply is read: all are open at once.
    let mut frame = Vec::new();
    for (i, stream) in streams.iter_mut().enumerate() {
        frame.clear();
        let request = bifrost_modbus::pdu::Request::ReadHoldingRegisters { address: i as u16, quantity: 1 };
        bifrost_modbus::tcp::encode_request(i as u16, 1, &request, &mut frame).unwrap();
        stream.write_all(&frame).await.unwrap();
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut reply = [0u8; 11];
        stream.read_exact(&mut reply).await.unwrap();
        let (header, pdu, _) = bifrost_modbus::tcp::decode_frame(&reply).unwrap().unwrap();
        assert_eq!(header.transaction_id, i as u16);
        assert_eq!(pdu, &[3, 2, (i >> 8) as u8, i as u8]);
    }
    assert_eq!(sim.stats().connections.load(Ordering::Relaxed), CONNECTIONS as u64);
}

/// A slow request must keep its transaction id when the 16-bit id wraps around it.
#[tokio::test]
async fn a_slow_request_keeps_its_id_when_ids_wrap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Answers every request with the register value = its address, except the one
    // with id 0, which it answers only once 70,000 others have been served.
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut input = Vec::new();
        let mut held = None;
        let mut served = 0u32;
        let mut chunk = [0u8; 4096];
        loop {
            let n = socket.read(&mut chunk).await.unwrap();
            if n == 0 {
                return;
            }
            input.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            while let Some((header, pdu, len)) = bifrost_modbus::tcp::decode_frame(&input).unwrap() {
                let address = [pdu[1], pdu[2]];
                let reply = [3, 2, address[0], address[1]];
                if header.transaction_id == 0 && held.is_none() {
                    held = Some(reply);
                } else {
                    bifrost_modbus::tcp::encode_frame(header.transaction_id, header.unit_id, &reply, &mut out);
                    served += 1;
                }
                input.drain(..len);
            }
            if served >= 70_000 {
                if let Some(reply) = held.take() {
                    bifrost_modbus::tcp::encode_frame(0, 1, &reply, &mut out);
                }
            }
            socket.write_all(&out).await.unwrap();
        }
    });
    let device = open(&format!("modbus-tcp://{addr}?max-in-flight=2")).await;
    let (sender, slow) = tokio::sync::oneshot::channel();
    let done: Box<dyn Completion> = Box::new(move |o| drop(sender.send(o)));
    device.read(&strings(&["holding-register:4242:UINT"]), Some(Duration::from_secs(120)), done);
    for i in 0..70_000u32 {
        let address = i % 4000;
        let tag = format!("holding-register:{address}:UINT");
        assert_eq!(read(&device, &[&tag], None).await, vec![Ok(Value::UInt(address as u64))]);
    }
    // And the connection goes on.
    assert_eq!(read(&device, &["holding-register:7:UINT"], None).await, vec![Ok(Value::UInt(7))]);
    let Outcome::Values(mut values) = slow.await.unwrap() else { panic!("not values") };
    assert_eq!(values.remove(0).unwrap().value, Value::UInt(4242));
}
