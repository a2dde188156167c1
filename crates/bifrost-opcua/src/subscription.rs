//! The Subscription and MonitoredItem service sets (Part 4, 5.12 and 5.13):
//! CreateSubscription, ModifySubscription, DeleteSubscriptions,
//! CreateMonitoredItems with a DataChangeFilter, ModifyMonitoredItems,
//! DeleteMonitoredItems, Publish with acknowledgements, Republish, and the
//! NotificationMessage a Publish response carries.

use bifrost_core::Result;
use bifrost_engine::Deadband;
use bytes::Bytes;

use crate::encoding::{
    put_u32, DataValue, Decode, DiagnosticInfo, Encode, ExtensionBody, ExtensionObject, QualifiedName, ReadLengths,
    Reader,
};
use crate::node_id::NodeId;
use crate::secure_channel;
use crate::session::{result_count, ServiceRequest, VALUE_ATTRIBUTE};

/// The binary encodings' NodeIds of the messages here (namespace 0).
pub mod encoding_id {
    pub const DATA_CHANGE_FILTER: u32 = 724;
    pub const CREATE_MONITORED_ITEMS_REQUEST: u32 = 751;
    pub const CREATE_MONITORED_ITEMS_RESPONSE: u32 = 754;
    pub const MODIFY_MONITORED_ITEMS_REQUEST: u32 = 763;
    pub const MODIFY_MONITORED_ITEMS_RESPONSE: u32 = 766;
    pub const DELETE_MONITORED_ITEMS_REQUEST: u32 = 781;
    pub const DELETE_MONITORED_ITEMS_RESPONSE: u32 = 784;
    pub const CREATE_SUBSCRIPTION_REQUEST: u32 = 787;
    pub const CREATE_SUBSCRIPTION_RESPONSE: u32 = 790;
    pub const MODIFY_SUBSCRIPTION_REQUEST: u32 = 793;
    pub const MODIFY_SUBSCRIPTION_RESPONSE: u32 = 796;
    pub const DATA_CHANGE_NOTIFICATION: u32 = 811;
    pub const PUBLISH_REQUEST: u32 = 826;
    pub const PUBLISH_RESPONSE: u32 = 829;
    pub const REPUBLISH_REQUEST: u32 = 832;
    pub const REPUBLISH_RESPONSE: u32 = 835;
    pub const TRANSFER_SUBSCRIPTIONS_REQUEST: u32 = 841;
    pub const TRANSFER_SUBSCRIPTIONS_RESPONSE: u32 = 844;
    pub const DELETE_SUBSCRIPTIONS_REQUEST: u32 = 847;
    pub const DELETE_SUBSCRIPTIONS_RESPONSE: u32 = 850;
}

fn request(type_id: u32, out: Vec<u8>) -> ServiceRequest {
    ServiceRequest { type_id, fields: Bytes::from(out) }
}

/// What a subscription asks for: how often it publishes, and how many silent
/// intervals pass before a keep-alive, and before the server gives up on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubscriptionParameters {
    pub publishing_interval_ms: f64,
    pub lifetime_count: u32,
    pub max_keep_alive_count: u32,
    pub max_notifications_per_publish: u32,
}

impl SubscriptionParameters {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.publishing_interval_ms.to_le_bytes());
        put_u32(out, self.lifetime_count);
        put_u32(out, self.max_keep_alive_count);
        put_u32(out, self.max_notifications_per_publish);
    }
}

pub fn create_subscription(parameters: &SubscriptionParameters) -> ServiceRequest {
    let mut out = Vec::with_capacity(32);
    parameters.encode(&mut out);
    out.push(1); // publishing enabled
    out.push(0); // priority
    request(encoding_id::CREATE_SUBSCRIPTION_REQUEST, out)
}

pub fn modify_subscription(subscription_id: u32, parameters: &SubscriptionParameters) -> ServiceRequest {
    let mut out = Vec::with_capacity(32);
    put_u32(&mut out, subscription_id);
    parameters.encode(&mut out);
    out.push(0); // priority
    request(encoding_id::MODIFY_SUBSCRIPTION_REQUEST, out)
}

/// The publishing interval the server granted to a ModifySubscription.
pub fn parse_modify_subscription(body: &[u8]) -> Result<f64> {
    let (_, mut r) = secure_channel::response(body, encoding_id::MODIFY_SUBSCRIPTION_RESPONSE, "ModifySubscription")?;
    Ok(f64::from_bits(r.u64("a publishing interval")?))
}

/// What the server granted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CreatedSubscription {
    pub subscription_id: u32,
    pub publishing_interval_ms: f64,
    pub lifetime_count: u32,
    pub max_keep_alive_count: u32,
}

pub fn parse_create_subscription(body: &[u8]) -> Result<CreatedSubscription> {
    let (_, mut r) = secure_channel::response(body, encoding_id::CREATE_SUBSCRIPTION_RESPONSE, "CreateSubscription")?;
    Ok(CreatedSubscription {
        subscription_id: r.u32("a subscription id")?,
        publishing_interval_ms: f64::from_bits(r.u64("a publishing interval")?),
        lifetime_count: r.u32("a lifetime count")?,
        max_keep_alive_count: r.u32("a keep-alive count")?,
    })
}

/// One item to monitor: a node's Value, reported under `client_handle`.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemToCreate {
    pub node: NodeId,
    pub client_handle: u32,
    pub sampling_interval_ms: f64,
    pub deadband: Option<Deadband>,
}

pub fn create_monitored_items(subscription_id: u32, items: &[ItemToCreate]) -> ServiceRequest {
    let mut out = Vec::with_capacity(16 + items.len() * 48);
    put_u32(&mut out, subscription_id);
    put_u32(&mut out, 2); // timestamps: both
    put_u32(&mut out, items.len() as u32);
    for item in items {
        item.node.encode(&mut out);
        put_u32(&mut out, VALUE_ATTRIBUTE);
        None::<&str>.encode(&mut out); // index range
        QualifiedName::default().encode(&mut out);
        put_u32(&mut out, 2); // monitoring mode: reporting
        monitoring_parameters(&mut out, item.client_handle, item.sampling_interval_ms, item.deadband);
    }
    request(encoding_id::CREATE_MONITORED_ITEMS_REQUEST, out)
}

/// MonitoringParameters: the handle changes come under, how often the node is
/// sampled, a DataChangeFilter for a deadband, and a queue of one (the newest).
fn monitoring_parameters(out: &mut Vec<u8>, client_handle: u32, sampling_interval_ms: f64, deadband: Option<Deadband>) {
    put_u32(out, client_handle);
    out.extend_from_slice(&sampling_interval_ms.to_le_bytes());
    let filter = match deadband {
        None => ExtensionObject { type_id: NodeId::null(), body: ExtensionBody::None },
        Some(deadband) => {
            let (kind, value) = match deadband {
                Deadband::Absolute(v) => (1u32, v),
                Deadband::Percent(v) => (2u32, v),
            };
            let mut body = Vec::with_capacity(16);
            put_u32(&mut body, 1); // trigger: status or value
            put_u32(&mut body, kind);
            body.extend_from_slice(&value.to_le_bytes());
            ExtensionObject {
                type_id: NodeId::numeric(0, encoding_id::DATA_CHANGE_FILTER),
                body: ExtensionBody::Binary(body),
            }
        }
    };
    filter.encode(out);
    put_u32(out, 1); // queue size
    out.push(1); // discard oldest
}

/// New parameters of monitored items, each named by the server's id for it and
/// keeping its client handle.
pub fn modify_monitored_items(
    subscription_id: u32,
    items: &[(u32, u32)],
    sampling_interval_ms: f64,
    deadband: Option<Deadband>,
) -> ServiceRequest {
    let mut out = Vec::with_capacity(12 + items.len() * 40);
    put_u32(&mut out, subscription_id);
    put_u32(&mut out, 2); // timestamps: both
    put_u32(&mut out, items.len() as u32);
    for &(monitored_item_id, client_handle) in items {
        put_u32(&mut out, monitored_item_id);
        monitoring_parameters(&mut out, client_handle, sampling_interval_ms, deadband);
    }
    request(encoding_id::MODIFY_MONITORED_ITEMS_REQUEST, out)
}

/// Per item modified, its status.
pub fn parse_modify_monitored_items(body: &[u8], count: usize) -> Result<Vec<u32>> {
    let (_, mut r) =
        secure_channel::response(body, encoding_id::MODIFY_MONITORED_ITEMS_RESPONSE, "ModifyMonitoredItems")?;
    result_count(&mut r, 19, count, || format!("{count} monitored items modified"))?;
    (0..count)
        .map(|_| {
            let status = r.u32("an item's status")?;
            r.u64("a revised sampling interval")?;
            r.u32("a revised queue size")?;
            ExtensionObject::decode(&mut r)?; // filter result
            Ok(status)
        })
        .collect()
}

pub fn delete_monitored_items(subscription_id: u32, ids: &[u32]) -> ServiceRequest {
    let mut out = Vec::with_capacity(8 + ids.len() * 4);
    put_u32(&mut out, subscription_id);
    put_u32(&mut out, ids.len() as u32);
    ids.iter().for_each(|id| put_u32(&mut out, *id));
    request(encoding_id::DELETE_MONITORED_ITEMS_REQUEST, out)
}

/// Per item deleted, its status.
pub fn parse_delete_monitored_items(body: &[u8], count: usize) -> Result<Vec<u32>> {
    let (_, mut r) =
        secure_channel::response(body, encoding_id::DELETE_MONITORED_ITEMS_RESPONSE, "DeleteMonitoredItems")?;
    result_count(&mut r, 4, count, || format!("{count} monitored items deleted"))?;
    (0..count).map(|_| r.u32("a status")).collect()
}

/// Per item created, its status (and the server's id for it).
pub fn parse_create_monitored_items(body: &[u8], count: usize) -> Result<Vec<(u32, u32)>> {
    let (_, mut r) =
        secure_channel::response(body, encoding_id::CREATE_MONITORED_ITEMS_RESPONSE, "CreateMonitoredItems")?;
    result_count(&mut r, 23, count, || format!("{count} monitored items"))?;
    (0..count)
        .map(|_| {
            let status = r.u32("an item's status")?;
            let id = r.u32("a monitored item id")?;
            r.u64("a revised sampling interval")?;
            r.u32("a revised queue size")?;
            ExtensionObject::decode(&mut r)?; // filter result
            Ok((status, id))
        })
        .collect()
}

pub fn delete_subscriptions(ids: &[u32]) -> ServiceRequest {
    let mut out = Vec::with_capacity(4 + ids.len() * 4);
    put_u32(&mut out, ids.len() as u32);
    ids.iter().for_each(|id| put_u32(&mut out, *id));
    request(encoding_id::DELETE_SUBSCRIPTIONS_REQUEST, out)
}

/// TransferSubscriptions of `ids` to this session. Their current values are not
/// sent again: what changed meanwhile waits in their queues, and Republish finds
/// what was sent and lost, so nothing comes twice.
pub fn transfer_subscriptions(ids: &[u32]) -> ServiceRequest {
    let mut out = Vec::with_capacity(5 + ids.len() * 4);
    put_u32(&mut out, ids.len() as u32);
    ids.iter().for_each(|id| put_u32(&mut out, *id));
    out.push(0); // send initial values: no
    request(encoding_id::TRANSFER_SUBSCRIPTIONS_REQUEST, out)
}

/// A TransferSubscriptions response: per subscription, its status and the
/// sequence numbers of the notifications the server still holds for Republish.
pub fn parse_transfer_subscriptions(body: &[u8], count: usize) -> Result<Vec<(u32, Vec<u32>)>> {
    let (_, mut r) =
        secure_channel::response(body, encoding_id::TRANSFER_SUBSCRIPTIONS_RESPONSE, "TransferSubscriptions")?;
    result_count(&mut r, 8, count, || format!("a transfer of {count} subscriptions"))?;
    (0..count)
        .map(|_| {
            let status = r.u32("a status")?;
            let n = r.length(4, "available sequence numbers")?.unwrap_or(0);
            Ok((status, (0..n).map(|_| r.u32("a sequence number")).collect::<Result<Vec<u32>>>()?))
        })
        .collect()
}

/// Publish, acknowledging the (subscription, sequence number) pairs received.
pub fn publish(acknowledgements: &[(u32, u32)]) -> ServiceRequest {
    let mut out = Vec::with_capacity(4 + acknowledgements.len() * 8);
    put_u32(&mut out, acknowledgements.len() as u32);
    for (subscription, sequence) in acknowledgements {
        put_u32(&mut out, *subscription);
        put_u32(&mut out, *sequence);
    }
    request(encoding_id::PUBLISH_REQUEST, out)
}

pub fn republish(subscription_id: u32, sequence: u32) -> ServiceRequest {
    let mut out = Vec::with_capacity(8);
    put_u32(&mut out, subscription_id);
    put_u32(&mut out, sequence);
    request(encoding_id::REPUBLISH_REQUEST, out)
}

/// A NotificationMessage: its sequence number and the data changes it carries
/// (none: a keep-alive).
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationMessage {
    pub sequence: u32,
    /// 100 ns ticks since 1601.
    pub publish_time: i64,
    /// Per change, the item's client handle and its value.
    pub changes: Vec<(u32, DataValue)>,
}

impl Decode<'_> for NotificationMessage {
    fn decode(r: &mut Reader<'_>) -> Result<NotificationMessage> {
        let sequence = r.u32("a sequence number")?;
        let publish_time = r.u64("a publish time")? as i64;
        let count = r.length(3, "notification data")?.unwrap_or(0);
        let mut changes = Vec::new();
        for _ in 0..count {
            let data = ExtensionObject::decode(r)?;
            if data.type_id != NodeId::numeric(0, encoding_id::DATA_CHANGE_NOTIFICATION) {
                continue; // a status change or events: not what a data subscription reports
            }
            let ExtensionBody::Binary(body) = &data.body else { continue };
            let mut d = Reader::new(body);
            let items = d.length(5, "monitored item notifications")?.unwrap_or(0);
            changes.reserve(items);
            for _ in 0..items {
                let handle = d.u32("a client handle")?;
                changes.push((handle, DataValue::decode(&mut d)?));
            }
            let diagnostics = d.length(1, "diagnostics")?.unwrap_or(0);
            for _ in 0..diagnostics {
                DiagnosticInfo::decode(&mut d)?;
            }
        }
        Ok(NotificationMessage { sequence, publish_time, changes })
    }
}

impl Encode for NotificationMessage {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.sequence);
        out.extend_from_slice(&self.publish_time.to_le_bytes());
        if self.changes.is_empty() {
            put_u32(out, 0);
            return;
        }
        put_u32(out, 1);
        let mut body = Vec::with_capacity(8 + self.changes.len() * 24);
        put_u32(&mut body, self.changes.len() as u32);
        for (handle, value) in &self.changes {
            put_u32(&mut body, *handle);
            value.encode(&mut body);
        }
        put_u32(&mut body, 0); // diagnostics
        ExtensionObject {
            type_id: NodeId::numeric(0, encoding_id::DATA_CHANGE_NOTIFICATION),
            body: ExtensionBody::Binary(body),
        }
        .encode(out);
    }
}

/// A Publish response: which subscription, what it still holds for us, and its message.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub subscription_id: u32,
    /// Sequence numbers the server keeps for a Republish.
    pub available: Vec<u32>,
    pub more: bool,
    pub message: NotificationMessage,
}

pub fn parse_publish(body: &[u8]) -> Result<Published> {
    let (_, mut r) = secure_channel::response(body, encoding_id::PUBLISH_RESPONSE, "Publish")?;
    let subscription_id = r.u32("a subscription id")?;
    let n = r.length(4, "available sequence numbers")?.unwrap_or(0);
    let available = (0..n).map(|_| r.u32("a sequence number")).collect::<Result<_>>()?;
    let more = r.u8("more notifications")? != 0;
    let message = NotificationMessage::decode(&mut r)?;
    Ok(Published { subscription_id, available, more, message })
}

pub fn parse_republish(body: &[u8]) -> Result<NotificationMessage> {
    let (_, mut r) = secure_channel::response(body, encoding_id::REPUBLISH_RESPONSE, "Republish")?;
    NotificationMessage::decode(&mut r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::Variant;

    #[test]
    fn notification_messages_round_trip_and_a_keep_alive_carries_nothing() {
        let message = NotificationMessage {
            sequence: 7,
            publish_time: 133_000_000_000_000_000,
            changes: vec![
                (3, DataValue { value: Some(Variant::Double(1.5)), ..DataValue::default() }),
                (9, DataValue { status: Some(0x8034_0000), ..DataValue::default() }),
            ],
        };
        let mut out = Vec::new();
        message.encode(&mut out);
        assert_eq!(NotificationMessage::decode(&mut Reader::new(&out)).unwrap(), message);
        let keep_alive = NotificationMessage { sequence: 8, publish_time: 0, changes: Vec::new() };
        let mut out = Vec::new();
        keep_alive.encode(&mut out);
        assert_eq!(out.len(), 16);
        // Publish acknowledges (subscription 5, sequence 7).
        assert_eq!(&publish(&[(5, 7)]).fields[..], &[1, 0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0]);
    }

    /// Part 4, 5.13.7: the ids, then sendInitialValues; the response's results carry each status and sequence numbers.
    #[test]
    fn transfer_subscriptions_is_byte_exact_and_its_results_are_read() {
        assert_eq!(&transfer_subscriptions(&[9]).fields[..], &[1, 0, 0, 0, 9, 0, 0, 0, 0]);
        let body = crate::session::tests::response(encoding_id::TRANSFER_SUBSCRIPTIONS_RESPONSE, |body| {
            body.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0])
        });
        assert_eq!(parse_transfer_subscriptions(&body, 1).unwrap(), vec![(0, vec![4, 5])]);
        assert!(parse_transfer_subscriptions(&body, 2).is_err());
        assert!(parse_transfer_subscriptions(&body[..body.len() - 6], 1).is_err());
    }

    #[test]
    fn modify_and_delete_requests_are_byte_exact() {
        let parameters = SubscriptionParameters {
            publishing_interval_ms: 250.0,
            lifetime_count: 30,
            max_keep_alive_count: 10,
            max_notifications_per_publish: 0,
        };
        let modify = modify_subscription(5, &parameters);
        assert_eq!(modify.type_id, 793);
        let mut expected = vec![5, 0, 0, 0];
        expected.extend(250f64.to_le_bytes());
        expected.extend([30, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&modify.fields[..], &expected[..]);
        let delete = delete_monitored_items(5, &[7, 8]);
        assert_eq!((delete.type_id, &delete.fields[..]), (781, &[5, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 8, 0, 0, 0][..]));
        // Item 7 keeps client handle 2, sampled every 250 ms, no filter, a queue of one.
        let items = modify_monitored_items(5, &[(7, 2)], 250.0, None);
        let mut expected = vec![5, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0, 0];
        expected.extend(250f64.to_le_bytes());
        expected.extend([0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!((items.type_id, &items.fields[..]), (763, &expected[..]));
    }

    #[test]
    fn a_monitored_item_with_an_absolute_deadband_carries_a_data_change_filter() {
        let item = ItemToCreate {
            node: NodeId::numeric(1, 2),
            client_handle: 4,
            sampling_interval_ms: 100.0,
            deadband: Some(Deadband::Absolute(0.5)),
        };
        let request = create_monitored_items(11, &[item]);
        // The filter: i=724, binary, 16 bytes: trigger 1, absolute 1, 0.5.
        let mut filter = vec![0x01, 0x00, 0xD4, 0x02, 0x01, 16, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0];
        filter.extend_from_slice(&0.5f64.to_le_bytes());
        assert!(request.fields.windows(filter.len()).any(|w| w == &filter[..]));
    }
}
