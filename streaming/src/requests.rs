//! Requests waiting for their client, under single-use random tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{StreamRequest, StreamingError};

/// How long a token is good for (kubelet's and the peers' figure).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Requests that may wait at once; more are refused rather than kept.
pub const MAX_PENDING: usize = 1000;
/// Random bytes per token (hex in the URL).
const TOKEN_BYTES: usize = 16;

struct Pending {
    request: StreamRequest,
    expires: Instant,
}

/// The token registry, with the server's base URL.
pub struct Requests {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    base_url: String,
    pending: Mutex<HashMap<String, Pending>>,
}

impl Requests {
    pub fn new(base_url: String) -> Requests {
        Requests {
            base_url,
            pending: Mutex::new(HashMap::new()),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Stores `request` and returns the absolute URL its client uses.
    pub fn insert(&self, request: StreamRequest) -> Result<String, StreamingError> {
        let now = Instant::now();
        let kind = request.kind();
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pending.retain(|_, p| p.expires > now);
        if pending.len() >= MAX_PENDING {
            return Err(StreamingError::TooManyPending(pending.len()));
        }
        let token = loop {
            let token = new_token()?;
            if !pending.contains_key(&token) {
                break token;
            }
        };
        pending.insert(
            token.clone(),
            Pending {
                request,
                expires: now + TOKEN_TTL,
            },
        );
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }

    /// The request of `token`, once: the token is gone afterwards, also
    /// when it was of another kind or had expired.
    pub fn take(&self, kind: &str, token: &str) -> Option<StreamRequest> {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let found = pending.remove(token)?;
        (found.expires > Instant::now() && found.request.kind() == kind).then_some(found.request)
    }

    #[cfg(test)]
    fn expire_all(&self) {
        let mut pending = self.pending.lock().expect("lock");
        for p in pending.values_mut() {
            p.expires = Instant::now();
        }
    }
}

fn new_token() -> Result<String, StreamingError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| StreamingError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PortForwardRequest;

    fn forward() -> StreamRequest {
        StreamRequest::PortForward(PortForwardRequest {
            pod_id: "p".into(),
            ports: vec![80],
        })
    }

    fn token_of(url: &str) -> &str {
        url.rsplit('/').next().expect("token")
    }

    #[test]
    fn a_token_is_good_once_and_for_its_kind_only() {
        let requests = Requests::new("http://127.0.0.1:1".into());
        let url = requests.insert(forward()).expect("insert");
        assert!(url.starts_with("http://127.0.0.1:1/portforward/"), "{url}");
        let token = token_of(&url).to_string();
        assert_eq!(token.len(), 2 * TOKEN_BYTES);
        assert_eq!(requests.take("portforward", &token), Some(forward()));
        assert_eq!(requests.take("portforward", &token), None, "used");

        let token = token_of(&requests.insert(forward()).expect("insert")).to_string();
        assert_eq!(requests.take("exec", &token), None, "wrong kind");
        assert_eq!(requests.take("portforward", &token), None, "spent by it");
    }

    #[test]
    fn an_expired_token_is_refused_and_at_most_1000_wait() {
        let requests = Requests::new("http://127.0.0.1:1".into());
        let url = requests.insert(forward()).expect("insert");
        requests.expire_all();
        assert_eq!(requests.take("portforward", token_of(&url)), None);

        let urls: Vec<String> = (0..MAX_PENDING)
            .map(|_| requests.insert(forward()).expect("insert"))
            .collect();
        let distinct: std::collections::HashSet<&String> = urls.iter().collect();
        assert_eq!(distinct.len(), MAX_PENDING);
        assert!(matches!(
            requests.insert(forward()),
            Err(StreamingError::TooManyPending(MAX_PENDING))
        ));
        // Expired ones make room.
        requests.expire_all();
        requests.insert(forward()).expect("room again");
    }
}
