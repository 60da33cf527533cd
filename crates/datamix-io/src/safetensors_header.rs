//! Deterministic safetensors headers.

use std::collections::BTreeMap;

use crate::error::HeaderError;

/// Rewrites a safetensors buffer's JSON header with every key sorted (tensor names and the
/// `__metadata__` entries, which `safetensors::serialize` writes from a `HashMap` in a
/// random order), padded with spaces to 8 bytes as the format asks; the tensor data is
/// untouched. Equal tensors and metadata then give byte-identical files, which any
/// safetensors reader loads as before (readers order tensors by their data offsets).
pub fn sorted_header(bytes: Vec<u8>) -> Result<Vec<u8>, HeaderError> {
    let err = |m: &str| HeaderError(m.to_string());
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| err("shorter than a safetensors header"))?;
    let end = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| err("header length past the end"))?;
    let json_err = |e: serde_json::Error| HeaderError(e.to_string());
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..end]).map_err(json_err)?;
    let header: BTreeMap<String, serde_json::Value> = header
        .into_iter()
        .map(|(k, v)| {
            if k == "__metadata__" {
                let m: BTreeMap<String, String> = serde_json::from_value(v).map_err(json_err)?;
                Ok((k, serde_json::to_value(m).map_err(json_err)?))
            } else {
                Ok((k, v))
            }
        })
        .collect::<Result<_, HeaderError>>()?;
    let mut json = serde_json::to_vec(&header).map_err(json_err)?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - end);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[end..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors-shaped buffer: length, `header` as given, then `data`.
    fn buffer(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn key_order_does_not_change_the_bytes() {
        let t = r#""dtype":"F32","shape":[1],"data_offsets":[0,4]"#;
        let u = r#""dtype":"F32","shape":[1],"data_offsets":[4,8]"#;
        let a = buffer(
            &format!(r#"{{"w":{{{t}}},"__metadata__":{{"z":"1","a":"2"}},"b":{{{u}}}}}"#),
            &[1, 2, 3, 4, 5, 6, 7, 8],
        );
        let b = buffer(
            &format!(r#"{{"b":{{{u}}},"w":{{{t}}},"__metadata__":{{"a":"2","z":"1"}}}}"#),
            &[1, 2, 3, 4, 5, 6, 7, 8],
        );
        let (sa, sb) = (sorted_header(a).unwrap(), sorted_header(b).unwrap());
        assert_eq!(sa, sb);
        let n = u64::from_le_bytes(sa[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0, "header padded to 8 bytes");
        assert_eq!(&sa[8 + n..], &[1, 2, 3, 4, 5, 6, 7, 8], "data untouched");
        let text = std::str::from_utf8(&sa[8..8 + n]).unwrap().trim_end();
        let (m, bk, w) = (
            text.find("__metadata__").unwrap(),
            text.find("\"b\"").unwrap(),
            text.find("\"w\"").unwrap(),
        );
        assert!(m < bk && bk < w, "keys sorted: {text}");
        assert!(text.find("\"a\"").unwrap() < text.find("\"z\"").unwrap());
    }

    #[test]
    fn malformed_buffers_are_refused() {
        assert!(sorted_header(b"short".to_vec()).is_err());
        assert!(sorted_header([u64::MAX.to_le_bytes().as_slice(), b"{}"].concat()).is_err());
        assert!(sorted_header(buffer("{not json", b"")).is_err());
        assert!(sorted_header(buffer(r#"{"__metadata__":{"a":1}}"#, b"")).is_err());
    }
}
