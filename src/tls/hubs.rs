//! Device hubs known by their client certificates: `[[tls.hubs]]` in the configuration.
//!
//! A certificate belongs to a hub when one of the DNS names in its subject alternative names
//! equals the hub's configured `subject`. The comparison is exact apart from ASCII case (DNS
//! names are case-insensitive, RFC 5280 §7.2): a wildcard name in a certificate matches no hub,
//! and the subject's common name is not looked at (the Web PKI has moved names to SANs, and
//! webpki, which verified the certificate, ignores the CN too). A certificate whose names match
//! two hubs is not trusted as either.
//!
//! The lookup runs only on certificates rustls has already verified against the client CA.

use std::collections::HashMap;

use rustls_pki_types::CertificateDer;

use crate::config::HubConfig;

/// A device hub, as the access rules see it: it may ingest, and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubIdentity {
    /// The configured name (`tls.hubs[].name`).
    pub name: String,
    /// The organisation the hub belongs to (`Organization/<id>`), if configured.
    pub org: Option<String>,
}

/// Why a verified certificate maps to no hub; the text goes into log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unmatched {
    #[error("the certificate's subject alternative names cannot be read")]
    Unreadable,
    #[error("no DNS name of the certificate is a configured hub subject")]
    NoHub,
    #[error("the certificate's DNS names match more than one hub")]
    Ambiguous,
}

/// The configured hubs, by lower-cased subject.
#[derive(Debug, Default)]
pub struct HubTable {
    by_subject: HashMap<String, HubIdentity>,
}

impl HubTable {
    /// The table of `hubs`, whose subjects [`crate::config`] has checked to be distinct DNS names.
    pub fn new(hubs: &[HubConfig]) -> HubTable {
        let by_subject = hubs
            .iter()
            .map(|hub| {
                (
                    hub.subject.to_ascii_lowercase(),
                    HubIdentity {
                        name: hub.name.clone(),
                        org: hub.org.clone(),
                    },
                )
            })
            .collect();
        HubTable { by_subject }
    }

    pub fn len(&self) -> usize {
        self.by_subject.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_subject.is_empty()
    }

    /// The hub the leaf certificate `leaf` belongs to.
    pub fn identify(&self, leaf: &CertificateDer<'_>) -> Result<HubIdentity, Unmatched> {
        let certificate =
            webpki::EndEntityCert::try_from(leaf).map_err(|_| Unmatched::Unreadable)?;
        self.identify_names(certificate.valid_dns_names())
    }

    /// The hub that the DNS names of a certificate point to: exactly one, or none.
    fn identify_names<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
    ) -> Result<HubIdentity, Unmatched> {
        let mut found: Option<&HubIdentity> = None;
        for name in names {
            if let Some(hub) = self.by_subject.get(&name.to_ascii_lowercase()) {
                match found {
                    Some(earlier) if earlier != hub => return Err(Unmatched::Ambiguous),
                    _ => found = Some(hub),
                }
            }
        }
        found.cloned().ok_or(Unmatched::NoHub)
    }
}

/// The SHA-256 fingerprint of a certificate (lower-case hex, as `openssl x509 -fingerprint
/// -sha256` shows it without colons): how logs name a client certificate.
pub fn fingerprint(certificate: &CertificateDer<'_>) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        certificate.as_ref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> HubTable {
        HubTable::new(&[
            HubConfig {
                name: "hub-vienna-1".into(),
                subject: "hub-vienna-1.devices.example".into(),
                org: Some("Organization/org-a".into()),
            },
            HubConfig {
                name: "hub-graz".into(),
                subject: "Hub-Graz.devices.example".into(),
                org: None,
            },
        ])
    }

    fn vienna() -> HubIdentity {
        HubIdentity {
            name: "hub-vienna-1".into(),
            org: Some("Organization/org-a".into()),
        }
    }

    #[test]
    fn a_san_equal_to_a_subject_is_that_hub() {
        assert_eq!(
            table().identify_names(["hub-vienna-1.devices.example"].into_iter()),
            Ok(vienna())
        );
        // Other names next to it do not matter.
        assert_eq!(
            table().identify_names(["www.example", "hub-vienna-1.devices.example"].into_iter()),
            Ok(vienna())
        );
    }

    #[test]
    fn dns_names_compare_without_ascii_case() {
        assert_eq!(
            table().identify_names(["HUB-VIENNA-1.devices.example"].into_iter()),
            Ok(vienna())
        );
        assert_eq!(
            table()
                .identify_names(["hub-graz.DEVICES.example"].into_iter())
                .unwrap()
                .name,
            "hub-graz"
        );
    }

    #[test]
    fn near_misses_and_wildcards_are_no_hub() {
        let table = table();
        for names in [
            &[][..],
            &["devices.example"][..],
            &["hub-vienna-1.devices.example.evil"][..],
            &["x.hub-vienna-1.devices.example"][..],
            &["*.devices.example"][..],
            &["hub-vienna-1"][..],
        ] {
            assert_eq!(
                table.identify_names(names.iter().copied()),
                Err(Unmatched::NoHub),
                "{names:?}"
            );
        }
    }

    #[test]
    fn a_certificate_naming_two_hubs_is_neither() {
        let names = ["hub-vienna-1.devices.example", "hub-graz.devices.example"];
        assert_eq!(
            table().identify_names(names.into_iter()),
            Err(Unmatched::Ambiguous)
        );
        // The same hub named twice is still that hub.
        let twice = [
            "hub-vienna-1.devices.example",
            "HUB-VIENNA-1.devices.example",
        ];
        assert_eq!(table().identify_names(twice.into_iter()), Ok(vienna()));
    }

    #[test]
    fn garbage_is_unreadable() {
        assert_eq!(
            table().identify(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01])),
            Err(Unmatched::Unreadable)
        );
    }

    #[test]
    fn fingerprints_are_sha256_hex() {
        let print = fingerprint(&CertificateDer::from(b"abc".to_vec()));
        assert_eq!(
            print,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
