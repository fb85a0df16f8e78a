//! The one thing Strata reads from a client certificate: its subject's
//! common name (CN), which mTLS authentication maps to a principal.
//!
//! A small DER walk instead of a full X.509 crate. It runs only on a
//! certificate rustls has already verified against the client CA, and it
//! bounds-checks every length anyway (no panic on any input).
//!
//! ```text
//! Certificate  ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
//! TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature,
//!                               issuer Name, validity, subject Name, ... }
//! Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
//! ```

/// DER tag of a SEQUENCE.
const SEQUENCE: u8 = 0x30;
/// DER tag of a SET.
const SET: u8 = 0x31;
/// DER tag of an explicit `[0]` (the version field).
const CONTEXT_0: u8 = 0xA0;
/// DER tag of an OBJECT IDENTIFIER.
const OID: u8 = 0x06;
/// Encoded OID 2.5.4.3 (id-at-commonName).
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// String types a CN may use that are valid UTF-8 as stored:
/// UTF8String, PrintableString, IA5String.
const UTF8_COMPATIBLE: [u8; 3] = [0x0C, 0x13, 0x16];

/// One TLV: tag, contents, and what follows it.
fn next(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Expects a TLV with `tag`; returns its contents and the rest.
fn expect(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = next(der)?;
    (t == tag).then_some((contents, rest))
}

/// The subject CN of a DER certificate, if it has one in a UTF-8
/// compatible string type.
pub fn subject_common_name(certificate: &[u8]) -> Option<String> {
    let (cert, _) = expect(certificate, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut fields = tbs;
    if let Some((CONTEXT_0, _, rest)) = next(fields) {
        fields = rest;
    }
    // serialNumber, signature, issuer, validity.
    for _ in 0..4 {
        fields = next(fields)?.2;
    }
    let (mut subject, _) = expect(fields, SEQUENCE)?;
    while !subject.is_empty() {
        let (rdn, rest) = expect(subject, SET)?;
        subject = rest;
        let mut attributes = rdn;
        while !attributes.is_empty() {
            let (attribute, rest) = expect(attributes, SEQUENCE)?;
            attributes = rest;
            let (oid, value) = expect(attribute, OID)?;
            if oid != COMMON_NAME {
                continue;
            }
            let (tag, text, _) = next(value)?;
            if !UTF8_COMPATIBLE.contains(&tag) {
                return None;
            }
            return String::from_utf8(text.to_vec()).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_common_name_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Strata test");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "orders-service");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_common_name(cert.der()).as_deref(),
            Some("orders-service")
        );
    }

    #[test]
    fn no_common_name_and_garbage_give_none() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()), None);
        for len in 0..cert.der().len() {
            let _ = subject_common_name(&cert.der()[..len]);
        }
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(subject_common_name(b""), None);
    }
}
