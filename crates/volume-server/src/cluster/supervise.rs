//! Background tasks that must not stop silently. A task spawned and forgotten ends
//! without a word when it panics (a bug): the heartbeat would stop, and the master
//! would drop this server's volumes while it goes on answering. [`supervise`] logs the
//! panic, counts it, and starts the task again.

use std::any::Any;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Wait before a task that panicked is started again, so a task that panics at once
/// does not spin.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Runs the task `start` makes until it returns (its own way of stopping, e.g. at
/// shutdown). When it panics: logs the panic, calls `on_panic` (the restart counter),
/// and after `RESTART_DELAY` starts a new one, unless `stop` was set meanwhile.
pub async fn supervise<Task>(
    name: &'static str,
    mut stop: watch::Receiver<bool>,
    on_panic: impl Fn(),
    mut start: impl FnMut() -> Task,
) where
    Task: Future<Output = ()> + Send + 'static,
{
    loop {
        match tokio::spawn(start()).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                let message = panic_message(e.into_panic().as_ref());
                tracing::error!(task = name, panic = %message, "background task panicked; restarting it");
                on_panic();
            }
            // Cancelled: the runtime is shutting down.
            Err(_) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(RESTART_DELAY) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// The text a panic was raised with (`panic!("...")`), or empty.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_task_that_panics_is_counted_and_started_again_until_it_returns() {
        let (_stop_tx, stop) = watch::channel(false);
        let (runs, panics) = (Arc::new(AtomicU32::new(0)), AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        supervise(
            "test",
            stop,
            || {
                panics.fetch_add(1, Ordering::Relaxed);
            },
            move || {
                let run = counted.fetch_add(1, Ordering::Relaxed);
                async move {
                    if run < 2 {
                        panic!("run {run} fails");
                    }
                }
            },
        )
        .await;
        assert_eq!((runs.load(Ordering::Relaxed), panics.load(Ordering::Relaxed)), (3, 2));
    }

    #[tokio::test]
    async fn no_restart_once_stopped() {
        let (stop_tx, stop) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        stop_tx.send(true).unwrap();
        supervise(
            "test",
            stop,
            || {},
            move || {
                counted.fetch_add(1, Ordering::Relaxed);
                async { panic!("always") }
            },
        )
        .await;
        assert_eq!(runs.load(Ordering::Relaxed), 1);
    }
}
