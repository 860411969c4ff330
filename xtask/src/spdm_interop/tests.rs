//! The socket framing and the relay against hostile peers, and the hook against the device
//! model over TCP.

use std::io::Cursor;
use std::net::TcpListener;
use std::thread;

use super::emu_socket::{
    COMMAND_NORMAL, COMMAND_SHUTDOWN, MAX_PAYLOAD, ObjectType, doe_unwrap, doe_wrap, read_frame,
    write_frame,
};
use super::relay::Relay;
use super::{DEFAULT_FUNCTION_ID, Depth, Options, interop, self_test};

#[test]
fn frames_round_trip_big_endian() {
    let mut wire = Vec::new();
    write_frame(&mut wire, COMMAND_NORMAL, &[1, 2, 3]).unwrap();
    assert_eq!(wire, [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3]);
    let frame = read_frame(&mut Cursor::new(&wire)).unwrap().unwrap();
    assert_eq!((frame.command, frame.transport), (COMMAND_NORMAL, 2));
    assert_eq!(frame.payload, [1, 2, 3]);
    assert_eq!(read_frame(&mut Cursor::new(&[] as &[u8])).unwrap(), None);
}

#[test]
fn hostile_frames_are_refused() {
    // A size past any DOE object: refused before anything is allocated.
    let mut huge = vec![0, 0, 0, 1, 0, 0, 0, 2];
    huge.extend_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
    assert!(read_frame(&mut Cursor::new(&huge)).is_err());
    // A header cut short, and a payload shorter than announced.
    assert!(read_frame(&mut Cursor::new(&[0, 0, 0, 1, 0])).is_err());
    assert!(read_frame(&mut Cursor::new(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 9, 1])).is_err());
}

#[test]
fn doe_objects_are_padded_and_checked() {
    let object = doe_wrap(ObjectType::Spdm, &[0x10, 0x84, 0, 0, 7]).unwrap();
    assert_eq!(object.len(), 16);
    assert_eq!(&object[..8], &[1, 0, 1, 0, 4, 0, 0, 0]);
    let (kind, message) = doe_unwrap(&object).unwrap();
    assert_eq!(kind, ObjectType::Spdm);
    assert_eq!(message, &[0x10, 0x84, 0, 0, 7, 0, 0, 0]);

    let secured = doe_wrap(ObjectType::SecuredSpdm, &[0; 4]).unwrap();
    assert_eq!(doe_unwrap(&secured).unwrap().0, ObjectType::SecuredSpdm);

    let broken = |at: usize, value: u8| {
        let mut o = object.clone();
        o[at] = value;
        doe_unwrap(&o).map(drop)
    };
    assert!(broken(0, 2).is_err(), "vendor ID");
    assert!(broken(2, 0).is_err(), "discovery is not SPDM");
    assert!(broken(2, 3).is_err(), "unknown type");
    assert!(broken(3, 1).is_err(), "reserved byte");
    assert!(broken(4, 5).is_err(), "length past the object");
    assert!(broken(4, 3).is_err(), "length short of the object");
    assert!(broken(7, 0x80).is_err(), "reserved length bits");
    assert!(doe_unwrap(&object[..7]).is_err(), "short header");
    assert!(doe_unwrap(&object[..15]).is_err(), "not whole dwords");
}

/// A peer that answers each request with the next of `answers` (plain SPDM objects), then
/// acknowledges SHUTDOWN; returns the requests it saw.
fn scripted_peer(answers: Vec<Vec<u8>>) -> (String, thread::JoinHandle<Vec<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let peer = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut seen = Vec::new();
        let mut answers = answers.into_iter();
        while let Some(frame) = read_frame(&mut stream).unwrap() {
            if frame.command == COMMAND_SHUTDOWN {
                write_frame(&mut stream, COMMAND_SHUTDOWN, &[]).unwrap();
                break;
            }
            seen.push(doe_unwrap(&frame.payload).unwrap().1.to_vec());
            let answer = doe_wrap(ObjectType::Spdm, &answers.next().unwrap()).unwrap();
            write_frame(&mut stream, COMMAND_NORMAL, &answer).unwrap();
        }
        seen
    });
    (addr, peer)
}

#[test]
fn relay_waits_out_busy_and_response_not_ready() {
    let version = vec![0x10, 0x04, 0, 0, 0, 1, 0x00, 0x12];
    let (addr, peer) = scripted_peer(vec![
        vec![0x10, 0x7F, 0x03, 0],
        // RDTExponent 4 (16 µs), RequestCode GET_VERSION, Token 0x5A, RDTM 2.
        vec![0x10, 0x7F, 0x42, 0, 4, 0x84, 0x5A, 2],
        version.clone(),
    ]);
    let mut relay = Relay::connect(&addr).unwrap();
    let request = [0x10, 0x84, 0, 0];
    let answer = relay.exchange(&request, false).unwrap();
    assert_eq!(&answer[..version.len()], &version[..]);
    assert_eq!((relay.round_trips, relay.waits), (3, 2));
    relay.shutdown().unwrap();
    let seen = peer.join().unwrap();
    // The same request after Busy; RESPOND_IF_READY with the code and token after NotReady.
    assert_eq!(seen[0], request);
    assert_eq!(seen[1], request);
    assert_eq!(seen[2], [0x10, 0xFF, 0x84, 0x5A]);
}

#[test]
fn relay_gives_up_on_a_responder_busy_forever() {
    let (addr, peer) = scripted_peer(vec![vec![0x12, 0x7F, 0x03, 0]; 17]);
    let mut relay = Relay::connect(&addr).unwrap();
    assert!(relay.exchange(&[0x12, 0x81, 0, 0], false).is_err());
    relay.shutdown().unwrap();
    assert_eq!(peer.join().unwrap().len(), 17);
}

#[test]
fn a_responder_that_is_not_spdm_fails_the_run_with_a_reason() {
    // VERSION without 1.2: the requester refuses, the run fails (not a panic, not a hang).
    let (addr, peer) = scripted_peer(vec![vec![0x10, 0x04, 0, 0, 0, 1, 0x00, 0x11]]);
    let passed = interop(&Options {
        responder: addr,
        slot: 0,
        function_id: DEFAULT_FUNCTION_ID,
        tdisp: Depth::Version,
    })
    .unwrap();
    assert!(!passed);
    // The peer saw GET_VERSION only; the failed run never sent SHUTDOWN, so it sees EOF.
    assert_eq!(peer.join().unwrap(), [vec![0x10, 0x84, 0, 0]]);
}

#[test]
fn hook_binds_against_the_device_model_over_tcp() {
    assert_eq!(self_test(), Ok(true));
}
