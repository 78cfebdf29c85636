//! A connection's push tags, read from its upgrade request at the
//! handshake, as its route's `tags` say.

use http::{HeaderMap, Uri};

use crate::affinity;
use crate::config::{TagSource, Tags};

/// Most channels one connection may listen to.
pub const MAX_CHANNELS: usize = 64;

/// Longest user or channel name, in bytes: names become registry keys.
pub const MAX_TAG_LEN: usize = 256;

/// The user and channels of one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnTags {
    /// The user, when the route names a source and the request carries it.
    pub user: Option<String>,
    /// Distinct channels, in the order given.
    pub channels: Vec<String>,
}

/// Why a request's tags were refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// More channels than [`MAX_CHANNELS`].
    #[error("more than 64 channels requested")]
    TooManyChannels,
    /// A user or channel name longer than [`MAX_TAG_LEN`] bytes, or not
    /// UTF-8 once decoded.
    #[error("a user or channel name is longer than 256 bytes or not UTF-8")]
    BadName,
}

/// Reads the tags `tags` names from the request. A missing source is no
/// tag, not an error: the connection is still reachable by its id.
pub fn read(tags: &Tags, headers: &HeaderMap, uri: &Uri) -> Result<ConnTags, TagError> {
    let user = match &tags.user {
        Some(source) => value(source, headers, uri)?.filter(|u| !u.is_empty()),
        None => None,
    };
    let mut channels: Vec<String> = Vec::new();
    if let Some(list) = match &tags.channels {
        Some(source) => value(source, headers, uri)?,
        None => None,
    } {
        for name in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if channels.iter().any(|c| c == name) {
                continue;
            }
            if channels.len() == MAX_CHANNELS {
                return Err(TagError::TooManyChannels);
            }
            if name.len() > MAX_TAG_LEN {
                return Err(TagError::BadName);
            }
            channels.push(name.to_string());
        }
    }
    if user.as_ref().is_some_and(|u| u.len() > MAX_TAG_LEN) {
        return Err(TagError::BadName);
    }
    Ok(ConnTags { user, channels })
}

fn value(source: &TagSource, headers: &HeaderMap, uri: &Uri) -> Result<Option<String>, TagError> {
    let raw = match source {
        TagSource::Header(name) => match headers.get(name.as_str()) {
            Some(v) => v
                .to_str()
                .map_err(|_| TagError::BadName)?
                .trim()
                .to_string(),
            None => return Ok(None),
        },
        TagSource::Query(name) => match query_param(uri.query().unwrap_or(""), name) {
            Some(v) => v?,
            None => return Ok(None),
        },
        TagSource::Cookie(name) => match affinity::cookie(headers, name) {
            Some(v) => String::from_utf8(v.to_vec()).map_err(|_| TagError::BadName)?,
            None => return Ok(None),
        },
    };
    Ok(Some(raw))
}

/// The percent-decoded value of query parameter `name` (`+` is a space,
/// as forms send it).
pub fn query_param(query: &str, name: &str) -> Option<Result<String, TagError>> {
    affinity::query_value(query, name).map(percent_decode)
}

fn percent_decode(v: &str) -> Result<String, TagError> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(TagError::BadName)?;
                let hex = std::str::from_utf8(hex).map_err(|_| TagError::BadName)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| TagError::BadName)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| TagError::BadName)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(user: TagSource, channels: TagSource) -> Tags {
        Tags {
            user: Some(user),
            channels: Some(channels),
        }
    }

    #[test]
    fn user_and_channels_from_each_source() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", "42".parse().unwrap());
        headers.insert("cookie", "a=1; uid=7".parse().unwrap());
        let uri: Uri = "/chat?user=a%20b&channels=room-1,+room-2,,room-1"
            .parse()
            .unwrap();
        let t = tags(
            TagSource::Header("x-user-id".into()),
            TagSource::Query("channels".into()),
        );
        let got = read(&t, &headers, &uri).unwrap();
        assert_eq!(got.user.as_deref(), Some("42"));
        assert_eq!(got.channels, ["room-1", "room-2"]);
        let t = tags(
            TagSource::Query("user".into()),
            TagSource::Cookie("uid".into()),
        );
        let got = read(&t, &headers, &uri).unwrap();
        assert_eq!(got.user.as_deref(), Some("a b"));
        assert_eq!(got.channels, ["7"]);
    }

    #[test]
    fn missing_sources_are_no_tags_and_limits_are_refused() {
        let t = tags(
            TagSource::Header("x-user-id".into()),
            TagSource::Query("channels".into()),
        );
        let empty = read(&t, &HeaderMap::new(), &"/".parse().unwrap()).unwrap();
        assert_eq!(empty, ConnTags::default());
        let many: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
        let uri: Uri = format!("/?channels={}", many.join(",")).parse().unwrap();
        assert_eq!(
            read(&t, &HeaderMap::new(), &uri),
            Err(TagError::TooManyChannels)
        );
        let uri: Uri = "/?channels=%ff".parse().unwrap();
        assert_eq!(read(&t, &HeaderMap::new(), &uri), Err(TagError::BadName));
    }
}
