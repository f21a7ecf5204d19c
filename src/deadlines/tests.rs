use super::*;

/// How many deadlines this thread's wheel keeps; `None` without a ticker.
fn kept() -> Option<usize> {
    with_wheel(|w| w.entries.len())
}

/// Polls `f` once, in the calling task.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
}

/// `f`, or a failure after ten minutes of (paused, so instant) test time: no test waits forever.
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(600), f)
        .await
        .expect("never finished")
}

async fn start_ticker() {
    tokio::spawn(run());
    tokio::task::yield_now().await;
    assert_eq!(kept(), Some(0), "the ticker did not start");
}

#[tokio::test(start_paused = true)]
async fn a_deadline_fires_after_its_time_within_the_resolution() {
    start_ticker().await;
    for wait in [
        Duration::from_millis(30),
        Duration::from_secs(1),
        Duration::from_secs(30),
    ] {
        let start = Instant::now();
        bounded(Deadline::at(start + wait)).await;
        let waited = start.elapsed();
        assert!(
            waited >= wait && waited <= wait + RESOLUTION,
            "{wait:?}: fired after {waited:?}"
        );
        assert_eq!(kept(), Some(0), "a passed deadline stays registered");
    }
}

#[tokio::test(start_paused = true)]
async fn an_earlier_deadline_wakes_a_ticker_waiting_for_a_later_one() {
    start_ticker().await;
    let start = Instant::now();
    let late = tokio::spawn(Deadline::at(start + Duration::from_secs(60)));
    tokio::task::yield_now().await;
    assert_eq!(kept(), Some(1));
    bounded(Deadline::at(start + Duration::from_secs(1))).await;
    assert!(
        start.elapsed() <= Duration::from_secs(1) + RESOLUTION,
        "{:?}",
        start.elapsed()
    );
    assert!(!late.is_finished());
    late.abort();
    let _ = late.await;
    assert_eq!(kept(), Some(0), "a dropped deadline stays registered");
}

#[tokio::test(start_paused = true)]
async fn a_moved_deadline_fires_at_its_new_time() {
    start_ticker().await;
    let start = Instant::now();
    let mut deadline = Deadline::at(start + Duration::from_secs(60));
    assert!(poll_once(&mut deadline).await.is_pending());
    deadline.reset(start + Duration::from_secs(2));
    bounded(deadline).await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited <= Duration::from_secs(2) + RESOLUTION,
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_at_returns_what_finishes_first() {
    start_ticker().await;
    let start = Instant::now();
    let quick = bounded(timeout_at(start + Duration::from_secs(5), || {
        tokio::time::sleep(Duration::from_secs(1))
    }))
    .await;
    assert_eq!(quick, Ok(()));
    let slow = bounded(timeout_at(start + Duration::from_secs(5), std::future::pending::<()>)).await;
    assert_eq!(slow, Err(Elapsed));
    assert!(start.elapsed() <= Duration::from_secs(5) + RESOLUTION);
    assert_eq!(kept(), Some(0));
}

#[tokio::test(start_paused = true)]
async fn without_a_ticker_a_deadline_is_a_tokio_sleep() {
    assert_eq!(kept(), None);
    let start = Instant::now();
    bounded(Deadline::at(start + Duration::from_secs(3))).await;
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_stopped_ticker_hands_the_thread_back_to_tokio() {
    let ticker = tokio::spawn(run());
    tokio::task::yield_now().await;
    assert_eq!(kept(), Some(0));
    ticker.abort();
    let _ = ticker.await;
    assert_eq!(kept(), None);
    let start = Instant::now();
    bounded(Deadline::at(start + Duration::from_secs(1))).await;
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn hypers_sleeps_fire_and_reset() {
    use hyper::rt::Timer;
    start_ticker().await;
    let start = Instant::now();
    let mut sleep = CoarseTimer.sleep(Duration::from_secs(60));
    assert!(poll_once(&mut sleep).await.is_pending());
    CoarseTimer.reset(&mut sleep, (start + Duration::from_secs(1)).into_std());
    bounded(sleep).await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited <= Duration::from_secs(1) + RESOLUTION,
        "{waited:?}"
    );
    assert_eq!(kept(), Some(0));
}
