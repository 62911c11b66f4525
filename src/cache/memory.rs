//! The embedded cache: this process only.

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{Cache, CacheError, CacheEvent, Invalidation};

pub struct MemoryCache {
    events: broadcast::Sender<CacheEvent>,
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self { events: broadcast::channel(1024).0 }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn publish(&self, message: &Invalidation) -> Result<(), CacheError> {
        // No receiver is no one to tell.
        let _ = self.events.send(CacheEvent::Invalidated(message.clone()));
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<CacheEvent> {
        self.events.subscribe()
    }

    fn is_listening(&self) -> bool {
        true
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
}
