//! What kind of address an IP is: the classes a name's addresses are checked against before
//! a plugin's request may connect to them (loopback, private, link-local, CGNAT, ULA, NAT64,
//! 6to4, Teredo, mapped or compatible, benchmark, reserved, multicast, ...).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of address an IP is, for the check of the addresses a name resolves to. Only
/// [`AddressClass::Public`] is reachable through a name without the manifest's opt-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressClass {
    Public,
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `0.0.0.0/8` ("this network").
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT.
    SharedCgnat,
    /// `169.254/16` (cloud metadata endpoints live here), `fe80::/10`.
    LinkLocal,
    /// `fc00::/7`.
    UniqueLocal,
    /// `fec0::/10`, deprecated but still routed inside some networks.
    SiteLocal,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18/15`, `2001:2::/48`.
    Benchmark,
    /// `240/4`, `192.0.0/24`, `192.88.99/24`, `100::/64`, the rest of `2001::/23`,
    /// `5f00::/16`, and IPv6 outside `2000::/3`.
    Reserved,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `::ffff:0:0/96`.
    Ipv4Mapped,
    /// `::/96`, deprecated IPv4-compatible addresses.
    Ipv4Compatible,
    /// `64:ff9b::/96` and `64:ff9b:1::/48`: a NAT64 gateway forwards them to an IPv4 address.
    Nat64,
    /// `2002::/16`.
    SixToFour,
    /// `2001::/32`.
    Teredo,
}

impl AddressClass {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Unspecified => "unspecified",
            AddressClass::ThisNetwork => "this-network",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::SharedCgnat => "shared (CGNAT)",
            AddressClass::LinkLocal => "link-local",
            AddressClass::UniqueLocal => "unique local",
            AddressClass::SiteLocal => "site-local",
            AddressClass::Documentation => "documentation",
            AddressClass::Benchmark => "benchmarking",
            AddressClass::Reserved => "reserved",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Ipv4Mapped => "IPv4-mapped",
            AddressClass::Ipv4Compatible => "IPv4-compatible",
            AddressClass::Nat64 => "NAT64",
            AddressClass::SixToFour => "6to4",
            AddressClass::Teredo => "Teredo",
        }
    }
}

/// The class of `ip`. Addresses that carry an IPv4 address (mapped, compatible, NAT64, 6to4,
/// Teredo) are classed by their form, never as public: what they reach depends on gateways
/// outside hookd's view. [`embedded_ipv4`] says what they carry.
pub(crate) fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        _ if ip.is_unspecified() => AddressClass::Unspecified,
        _ if ip.is_broadcast() => AddressClass::Broadcast,
        (0, _, _) => AddressClass::ThisNetwork,
        (127, _, _) => AddressClass::Loopback,
        (10, _, _) | (192, 168, _) => AddressClass::Private,
        (172, b, _) if b & 0xf0 == 16 => AddressClass::Private,
        (100, b, _) if b & 0xc0 == 64 => AddressClass::SharedCgnat,
        (169, 254, _) => AddressClass::LinkLocal,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressClass::Documentation,
        (198, 18 | 19, _) => AddressClass::Benchmark,
        (192, 0, 0) | (192, 88, 99) => AddressClass::Reserved,
        (a, _, _) if a & 0xf0 == 224 => AddressClass::Multicast,
        (a, _, _) if a & 0xf0 == 240 => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => AddressClass::Ipv4Mapped,
        [0, 0, 0, 0, 0, 0, _, _] => AddressClass::Ipv4Compatible,
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 1, ..] => AddressClass::Nat64,
        [0x100, 0, 0, 0, ..] => AddressClass::Reserved,
        [0x2001, 0, ..] => AddressClass::Teredo,
        [0x2001, 2, 0, ..] => AddressClass::Benchmark,
        [0x2001, 0xdb8, ..] => AddressClass::Documentation,
        [0x2001, b, ..] if b < 0x200 => AddressClass::Reserved,
        [0x2002, ..] => AddressClass::SixToFour,
        [0x3fff, b, ..] if b & 0xf000 == 0 => AddressClass::Documentation,
        [0x5f00, ..] => AddressClass::Reserved,
        [a, ..] if a & 0xfe00 == 0xfc00 => AddressClass::UniqueLocal,
        [a, ..] if a & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        [a, ..] if a & 0xffc0 == 0xfec0 => AddressClass::SiteLocal,
        [a, ..] if a & 0xff00 == 0xff00 => AddressClass::Multicast,
        // Only 2000::/3 is allocated for global unicast.
        [a, ..] if a & 0xe000 != 0x2000 => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped and -compatible (last 32 bits),
/// NAT64 (RFC 6052: last 32 bits of the /96, around the `u` octet of the /48), 6to4 (bits
/// 16-47), Teredo (the client's, bits 96-127 inverted).
pub(crate) fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match classify_v6(ip) {
        AddressClass::Ipv4Mapped | AddressClass::Ipv4Compatible => Some(last),
        AddressClass::Nat64 if o[4] == 0 && o[5] == 1 => {
            Some(Ipv4Addr::new(o[6], o[7], o[9], o[10]))
        }
        AddressClass::Nat64 => Some(last),
        AddressClass::SixToFour => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        AddressClass::Teredo => Some(Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15])),
        _ => None,
    }
}

/// `ip`'s class for a log line, with the class of the IPv4 address it carries, if any:
/// `NAT64, carrying 127.0.0.1 (loopback)`.
pub(crate) fn describe(ip: IpAddr) -> String {
    let class = classify(ip);
    match ip {
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => format!(
                "{}, carrying {v4} ({})",
                class.as_str(),
                classify_v4(v4).as_str()
            ),
            None => class.as_str().to_owned(),
        },
        IpAddr::V4(_) => class.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    #[test]
    fn address_classes() {
        // (address, its class, the class of the IPv4 address it carries)
        let table: &[(&str, AddressClass, Option<AddressClass>)] = &[
            ("93.184.216.34", Public, None),
            ("1.1.1.1", Public, None),
            ("8.8.8.8", Public, None),
            ("0.0.0.0", Unspecified, None),
            ("0.1.2.3", ThisNetwork, None),
            ("127.0.0.1", Loopback, None),
            ("127.0.1.1", Loopback, None),
            ("10.1.2.3", Private, None),
            ("172.16.5.4", Private, None),
            ("172.31.255.255", Private, None),
            ("172.32.0.1", Public, None),
            ("192.168.0.1", Private, None),
            ("100.64.0.1", SharedCgnat, None),
            ("100.127.255.255", SharedCgnat, None),
            ("100.128.0.1", Public, None),
            ("169.254.169.254", LinkLocal, None),
            ("192.0.0.8", Reserved, None),
            ("192.0.2.1", Documentation, None),
            ("198.51.100.7", Documentation, None),
            ("203.0.113.9", Documentation, None),
            ("192.88.99.1", Reserved, None),
            ("198.18.0.1", Benchmark, None),
            ("198.19.255.255", Benchmark, None),
            ("198.20.0.1", Public, None),
            ("224.0.0.1", Multicast, None),
            ("239.255.255.250", Multicast, None),
            ("240.0.0.1", Reserved, None),
            ("255.255.255.255", Broadcast, None),
            ("2606:4700::1111", Public, None),
            ("2a00:1450:4001:80e::200e", Public, None),
            ("::", Unspecified, None),
            ("::1", Loopback, None),
            ("::ffff:127.0.0.1", Ipv4Mapped, Some(Loopback)),
            ("::ffff:93.184.216.34", Ipv4Mapped, Some(Public)),
            ("::10.0.0.1", Ipv4Compatible, Some(Private)),
            ("64:ff9b::7f00:1", Nat64, Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Nat64, Some(LinkLocal)),
            ("64:ff9b::5db8:d822", Nat64, Some(Public)),
            // 64:ff9b:1::/48 with 10.0.0.1 around the `u` octet (RFC 6052 section 2.2).
            ("64:ff9b:1:a00:0:100::", Nat64, Some(Private)),
            ("100::1", Reserved, None),
            // Teredo: the client's address is stored inverted.
            (
                "2001:0:4136:e378:8000:63bf:80ff:fffe",
                Teredo,
                Some(Loopback),
            ),
            ("2001:2::1", Benchmark, None),
            ("2001:10::1", Reserved, None),
            ("2001:db8::1", Documentation, None),
            ("2002:7f00:1::1", SixToFour, Some(Loopback)),
            ("2002:a9fe:a9fe::1", SixToFour, Some(LinkLocal)),
            ("3fff::1", Documentation, None),
            ("3fff:1000::1", Public, None),
            ("5f00::1", Reserved, None),
            ("fc00::1", UniqueLocal, None),
            ("fd12:3456::1", UniqueLocal, None),
            ("fe80::1", LinkLocal, None),
            ("fec0::1", SiteLocal, None),
            ("ff02::1", Multicast, None),
            ("4000::1", Reserved, None),
            ("1234::1", Reserved, None),
        ];
        for &(text, class, carried) in table {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(classify(ip), class, "{text}");
            let embedded = match ip {
                IpAddr::V6(v6) => embedded_ipv4(v6).map(classify_v4),
                IpAddr::V4(_) => None,
            };
            assert_eq!(embedded, carried, "{text}: the IPv4 address it carries");
        }
        assert_eq!(
            describe("64:ff9b::7f00:1".parse().unwrap()),
            "NAT64, carrying 127.0.0.1 (loopback)"
        );
        assert_eq!(describe("10.0.0.1".parse().unwrap()), "private");
    }
}
