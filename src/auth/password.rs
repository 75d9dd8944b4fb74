//! argon2id password hashing. Both operations are CPU- and memory-heavy on purpose (19 MiB
//! each): requests go through [`Passwords`], which runs them on a few dedicated threads (one
//! per core), so the async threads keep serving, a burst of logins or registrations queues
//! instead of spawning threads, and the allocator's per-thread arenas that end up holding
//! argon2's memory stay as few as those threads. (On tokio's blocking pool, whose threads
//! come and go, a server reached about 1 GB of resident memory after a few hundred
//! verifications; on dedicated threads it stays near threads x 19 MiB.)

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::error::AppError;

/// argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's recommendation).
fn hasher() -> Argon2<'static> {
    Argon2::default()
}

pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
}

/// Whether `password` matches the PHC string `phc`; a malformed hash never matches.
pub fn verify(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The argon2 runner; cheap to clone. Its threads end when the last clone is dropped.
#[derive(Clone)]
pub struct Passwords {
    jobs: mpsc::Sender<Job>,
}

impl Passwords {
    /// `threads` dedicated argon2 threads (at least one).
    pub fn new(threads: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>(1024);
        // std Mutex: a worker holds it only while taking the next job off the queue.
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("sealpost-argon2-{i}"))
                .spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(mut queue) => queue.blocking_recv(),
                            Err(_) => None,
                        };
                        match job {
                            Some(job) => job(),
                            None => break,
                        }
                    }
                })
                .expect("spawning an argon2 thread");
        }
        Self { jobs }
    }

    /// One thread per core of this machine.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| AppError::internal(anyhow::anyhow!("argon2 threads are gone")))?;
        result
            .await
            .map_err(|_| AppError::internal(anyhow::anyhow!("an argon2 job was dropped")))
    }

    pub async fn hash(&self, password: String) -> Result<String, AppError> {
        self.run(move || hash(&password))
            .await?
            .map_err(AppError::Internal)
    }

    pub async fn verify(&self, phc: String, password: String) -> Result<bool, AppError> {
        self.run(move || verify(&phc, &password)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_runner_hashes_and_verifies_on_its_own_threads() {
        let passwords = Passwords::new(2);
        let phc = passwords
            .hash("a password of some length".into())
            .await
            .unwrap();
        let checks = (0..6).map(|i| {
            let passwords = passwords.clone();
            let phc = phc.clone();
            async move {
                let candidate = if i % 2 == 0 {
                    "a password of some length"
                } else {
                    "another one"
                };
                passwords.verify(phc, candidate.into()).await.unwrap()
            }
        });
        let results = futures_util::future::join_all(checks).await;
        assert_eq!(results, vec![true, false, true, false, true, false]);
    }

    #[test]
    fn a_hash_verifies_its_password_and_nothing_else() {
        let phc = hash("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify(&phc, "correct horse battery staple"));
        assert!(!verify(&phc, "correct horse battery stapl"));
        assert!(!verify("not a phc string", "anything"));
    }
}
