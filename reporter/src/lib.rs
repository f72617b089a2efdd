//! The one way every long job of srcgrab says how it goes (uv's `Reporter` is the model):
//! enumerate, fetch (downloads, git checkouts, Nix builds), verify, ingest and the binaries
//! closure each define their events, and report them through [`Reporter`]; the command line
//! draws them (bars on a terminal, a line every few seconds otherwise), and library users and
//! tests pass [`Silent`]. Reports come from many threads and tasks at once, so an
//! implementation must be cheap and never block.

#![forbid(unsafe_code)]

/// Receives the events of one kind of job.
pub trait Reporter<Event>: Send + Sync {
    fn report(&self, event: Event);
}

/// Shows nothing.
pub struct Silent;

impl<Event> Reporter<Event> for Silent {
    fn report(&self, _event: Event) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Recorder(Mutex<Vec<u32>>);

    impl Reporter<u32> for Recorder {
        fn report(&self, event: u32) {
            self.0.lock().unwrap().push(event);
        }
    }

    #[test]
    fn events_reach_the_reporter_in_order_and_silent_takes_any() {
        let recorder = Recorder(Mutex::new(Vec::new()));
        let reporter: &dyn Reporter<u32> = &recorder;
        for event in [3, 1, 2] {
            reporter.report(event);
        }
        assert_eq!(*recorder.0.lock().unwrap(), [3, 1, 2]);
        Silent.report("anything");
    }
}
