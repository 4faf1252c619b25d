//! Writing and restoring a detect partition's state: a checkpoint flushes the alerts, makes the
//! sinks and the lake durable, writes each changed partition to the changelog and the local
//! state directory, and only then commits the offsets; fencing keeps an instance that may have
//! lost its partitions from writing; a restore picks the newest checkpoint and starts the
//! owner's epochs above it.

use super::*;

/// What a checkpoint needs; shared with the rebalance callback.
pub(super) struct Saver {
    /// `<group>-bindings`, when this instance shares its credential bindings.
    pub(super) bindings_topic: Option<String>,
    /// This process, on the bindings it publishes (its own are not merged back).
    pub(super) instance: String,
    /// New bindings not yet published.
    pub(super) bindings: Mutex<crate::kafka::bindings::Batch>,
    pub(super) k: KafkaConfig,
    pub(super) group: String,
    pub(super) changelog_topic: String,
    pub(super) changelog_partitions: i32,
    pub(super) repartitioned: bool,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) producer: Arc<Producer>,
    pub(super) deliveries: Deliveries,
    pub(super) failed_before: AtomicU64,
    pub(super) stdout: Option<std::io::Stdout>,
    pub(super) watermarks: BaseConsumer,
    /// The `[[sinks]]`: synced before offsets are committed.
    pub(super) sinks: crate::sink::Sinks,
    /// Encodes alerts for the alerts topic.
    pub(super) topic_encoder: crate::encode::Encoder,
    /// Encodes alerts for stdout.
    pub(super) stdout_encoder: crate::encode::Encoder,
    /// The lake: alerts (and, in direct mode, events), synced before offsets are committed.
    pub(super) lake: Option<Mutex<Lake>>,
    /// The group's session timeout: a process that stood still this long (SIGSTOP, a frozen
    /// VM) has most likely lost its partitions to another instance.
    pub(super) session_timeout: Duration,
    /// When the poll loop's current turn began, and until when no state is written because
    /// a turn stood still (see [`Saver::fenced`]).
    pub(super) turns: Mutex<Turns>,
    /// The alerts topic and its partition count (0 without one): checkpoints record its end
    /// offsets, restores read what was sent after them.
    pub(super) alerts_topic: Option<String>,
    pub(super) alerts_partitions: i32,
    /// Alerts sent to the alerts topic since the last checkpoint, and checkpoints written by
    /// this process (for the test hook below).
    pub(super) alerts_since: AtomicU64,
    pub(super) written: AtomicU64,
    /// Test hook (`NHIWATCH_TEST_CRASH_AFTER_ALERTS`): abort, as `kill -9` would, at the first
    /// checkpoint that follows an earlier one and alerts sent since, after those alerts were
    /// delivered and before the checkpoint is written: the case a restore must not send
    /// alerts twice in.
    pub(super) crash_after_alerts: bool,
    /// Test hook (`NHIWATCH_TEST_STALL_BEFORE_ALERT=SECS`): stand still once, for SECS, with
    /// the first alerts in hand (a stall at the worst moment: another instance may take the
    /// partition over and send them meanwhile).
    pub(super) stall_before_alert: Option<Duration>,
    pub(super) stalled: std::sync::atomic::AtomicBool,
    /// Alerts held back in the partitions this instance holds (see `Part::withheld`).
    pub(super) withheld: AtomicU64,
    /// A record was processed but its alerts could not be handed off (a spool or the lake
    /// failed): the state in memory is ahead of what was delivered, so no checkpoint may be
    /// written from it any more, the one on revoke at shutdown included, or those alerts
    /// would be lost for good. The records since the last checkpoint are read again at the
    /// next start.
    pub(super) broken: std::sync::atomic::AtomicBool,
    /// Assigned partitions whose restore failed because the cluster was unavailable: paused
    /// until a retry restores them.
    pub(super) unrestored: Mutex<Vec<super::Key>>,
}

/// The poll loop's pace, for fencing.
pub(super) struct Turns {
    pub(super) began: Instant,
    pub(super) stalled_until: Option<Instant>,
}

/// The detect stage's lake writer and when it last wrote the baselines.
pub(super) struct Lake {
    pub(super) writer: crate::lake::Writer,
    pub(super) baselines_every: Duration,
    pub(super) baselines_at: Option<Instant>,
}

impl Lake {
    /// Writes the baselines of `parts` (all when `force`, else only when they are due).
    pub(super) fn baselines<'a>(
        &mut self,
        parts: impl Iterator<Item = (&'a Key, &'a Part)>,
        force: bool,
    ) -> Result<(), Error> {
        if !force
            && self
                .baselines_at
                .is_some_and(|t| t.elapsed() < self.baselines_every)
        {
            return Ok(());
        }
        self.baselines_at = Some(Instant::now());
        let now = crate::time::Timestamp::now();
        for ((topic, partition), part) in parts {
            let name = format!("{topic}-{partition}");
            for (table, batch) in crate::lake::schema::state_tables(&part.engine, now)? {
                crate::lake::writer::write_whole(self.writer.root(), table, &name, &batch)?;
            }
        }
        Ok(())
    }
}

/// Counts a failed lake write; a full disk is counted where the stage pauses for it.
fn lake_write_failed(e: &crate::lake::Error) {
    if !e.is_disk_full() {
        metrics::get().error(stage::LAKE, "write");
    }
}

impl Saver {
    /// Flushes alerts, writes the changed partitions' state (changelog, then local file) and
    /// commits their offsets — in that order, so a committed offset is always covered by a
    /// durable checkpoint and every alert before it was delivered.
    pub(super) fn checkpoint(
        &self,
        consumer: &BaseConsumer<Ctx>,
        parts: &mut HashMap<Key, Part>,
        only: Option<&[Key]>,
    ) -> Result<(), Error> {
        if self.broken.load(Ordering::Acquire) {
            return Err(Error::Setup(
                "checkpoint not written: alerts of a record processed since the last one could not be handed off; the records since are read again at the next start".into(),
            ));
        }
        self.write_checkpoint(consumer, parts, only)
            .inspect_err(|_| metrics::get().error(stage::STATE, "checkpoint"))
    }

    /// Marks the state in memory as ahead of what was delivered (see `broken`).
    pub(super) fn break_off(&self) {
        self.broken.store(true, Ordering::Release);
    }

    /// Whether writing state now could overwrite another owner's: the group has taken the
    /// partitions away, or the process stood still long enough that it may have and the
    /// consumer has not told yet. A turn of the poll loop (the current one included: a stop
    /// inside the poll, most likely) longer than the session timeout means the group may have
    /// moved on; no state is written for another session timeout, time enough for the
    /// consumer to learn whether it is still a member. Fencing by the writer; the epoch a
    /// restore starts from (see [`Saver::restore`]) makes a write that slips through lose to
    /// the new owner's.
    pub(super) fn fenced(&self, consumer: &BaseConsumer<Ctx>) -> bool {
        if consumer.assignment_lost() {
            return true;
        }
        let mut t = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let gap = now.duration_since(t.began);
        if gap > self.session_timeout {
            tracing::warn!(
                seconds = gap.as_secs_f64(),
                "the process stood still longer than the group's session timeout; no state is written until the group confirms this instance still owns its partitions"
            );
            t.began = now;
            t.stalled_until = Some(now + self.session_timeout);
        }
        match t.stalled_until {
            Some(until) if now < until => true,
            Some(_) => {
                t.stalled_until = None;
                false
            }
            None => false,
        }
    }

    /// The stall test hook: stands still once, with alerts in hand.
    pub(super) fn test_stall(&self) {
        if let Some(d) = self.stall_before_alert
            && !self.stalled.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                seconds = d.as_secs(),
                "test hook NHIWATCH_TEST_STALL_BEFORE_ALERT: standing still with alerts in hand"
            );
            std::thread::sleep(d);
        }
    }

    /// A partition leaves this instance: its held-back alerts go with it (its next owner
    /// processes those records again).
    pub(super) fn forget_withheld(&self, part: &Part) {
        let n = part.withheld.len() as u64;
        if n > 0 {
            self.withheld.fetch_sub(n, Ordering::Relaxed);
            tracing::info!(
                partition = part.src.partition,
                alerts = n,
                "alerts held back for a partition this instance no longer owns are dropped; its new owner sends them"
            );
        }
    }

    /// Sends the new bindings collected when the batch is due (or `now`).
    pub(super) fn publish_bindings(&self, now: bool) -> Result<(), Error> {
        let Some(topic) = &self.bindings_topic else {
            return Ok(());
        };
        let taken = self
            .bindings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(now);
        if let Some((value, n)) = taken {
            crate::kafka::send(
                &self.producer,
                BaseRecord::to(topic)
                    .key(self.instance.as_bytes())
                    .payload(&value[..]),
            )?;
            metrics::get().bindings_published.inc_by(n as u64);
        }
        Ok(())
    }

    /// A new turn of the poll loop begins (a turn that stood still is judged first).
    pub(super) fn next_turn(&self, consumer: &BaseConsumer<Ctx>) {
        self.fenced(consumer);
        self.turns.lock().unwrap_or_else(|e| e.into_inner()).began = Instant::now();
    }

    pub(super) fn write_checkpoint(
        &self,
        consumer: &BaseConsumer<Ctx>,
        parts: &mut HashMap<Key, Part>,
        only: Option<&[Key]>,
    ) -> Result<(), Error> {
        if self.fenced(consumer) {
            metrics::get().error(stage::STATE, "checkpoint_fenced");
            tracing::info!("checkpoint skipped: this instance may no longer own its partitions");
            return Ok(());
        }
        // The bindings of the records this checkpoint includes go out with its flush.
        self.publish_bindings(true)?;
        // A partition holding alerts back is not checkpointed: its offsets must not move
        // past records whose alerts nobody sent.
        // Partitions judging together save the context they share with their own state: when
        // one changed, all are written, so every snapshot holds the same context and a
        // restore of them together gets exactly it back.
        let together = self.k.share_context && parts.values().any(|p| p.dirty);
        let chosen: Vec<Key> = parts
            .iter()
            .filter(|(p, part)| {
                (part.dirty || together)
                    && part.withheld.is_empty()
                    && only.is_none_or(|o| o.contains(p))
            })
            .map(|(p, _)| p.clone())
            .collect();
        if chosen.is_empty() {
            // Nothing new, so every alert row is staged already; the parts still roll when
            // due, or an idle stream's last alerts would never reach a query. Spools are
            // synced too: after a full disk they may hold alerts in memory still.
            self.sinks.sync().map_err(|e| Error::Sink(e.to_string()))?;
            if let Some(lake) = &self.lake {
                let mut lake = lake.lock().unwrap_or_else(|e| e.into_inner());
                lake.writer.sync().inspect_err(lake_write_failed)?;
            }
            return Ok(());
        }
        let started = Instant::now();
        let m = metrics::get();
        if let Some(out) = &self.stdout {
            let _ = out.lock().flush();
        }
        // Alerts handed to sinks are durable (spooled and synced) before any offset moves.
        self.sinks.sync().map_err(|e| Error::Sink(e.to_string()))?;
        // So are the lake's rows.
        if let Some(lake) = &self.lake {
            let mut lake = lake.lock().unwrap_or_else(|e| e.into_inner());
            lake.writer.sync().inspect_err(lake_write_failed)?;
            lake.baselines(
                parts.iter().filter(|(k, _)| chosen.contains(k)),
                only.is_some(),
            )?;
        }
        let before = self.failed_before.load(Ordering::Acquire);
        crate::kafka::flush(&self.producer, &self.deliveries, before, TIMEOUT)?;
        // Every alert of the records this checkpoint includes is on the alerts topic now, so
        // its end offsets mark where alerts of later records begin.
        let alerts_from = match &self.alerts_topic {
            Some(topic) => {
                checkpoint::topic_ends(&self.watermarks, topic, self.alerts_partitions, TIMEOUT)?
            }
            None => Vec::new(),
        };
        if self.crash_after_alerts
            && self.written.load(Ordering::Relaxed) > 0
            && self.alerts_since.load(Ordering::Relaxed) > 0
        {
            tracing::error!(
                "test hook NHIWATCH_TEST_CRASH_AFTER_ALERTS: aborting before the checkpoint"
            );
            std::process::abort();
        }
        let mut written = Vec::new();
        for p in &chosen {
            let Some(part) = parts.get_mut(p) else {
                continue;
            };
            let engine = part.engine.snapshot_bytes().map_err(|e| Error::State {
                partition: p.1,
                message: format!("cannot encode state of {}: {e}", part.src),
            })?;
            m.checkpoint_bytes.inc_by(engine.len() as u64);
            let cp = Checkpoint {
                topic: p.0.clone(),
                partition: p.1,
                epoch: part.epoch + 1,
                next_offset: part.next_offset,
                marks: Marks::from_map(&part.marks),
                changelog_end: -1,
                engine,
                alerts_from: alerts_from.clone(),
            };
            checkpoint::send_changelog(&self.producer, &self.changelog_topic, &part.src, &cp)?;
            written.push((part.src.changelog, cp));
        }
        crate::kafka::flush(&self.producer, &self.deliveries, before, TIMEOUT)?;
        let mut tpl = TopicPartitionList::new();
        for (changelog, mut cp) in written {
            if let Some(dir) = &self.state_dir {
                cp.changelog_end = checkpoint::end_offset(
                    &self.watermarks,
                    &self.changelog_topic,
                    changelog,
                    TIMEOUT,
                )?;
                checkpoint::write_local(dir, &cp)?;
            }
            let _ = tpl.add_partition_offset(
                &cp.topic,
                cp.partition,
                rdkafka::Offset::Offset(cp.next_offset),
            );
            if let Some(part) = parts.get_mut(&(cp.topic.clone(), cp.partition)) {
                part.epoch = cp.epoch;
                part.dirty = false;
            }
            m.checkpoints.inc();
        }
        self.written.fetch_add(1, Ordering::Relaxed);
        self.alerts_since.store(0, Ordering::Relaxed);
        // A failed commit loses nothing: the checkpoint holds the offset it includes, and a
        // restore skips what it covers. It fails when the group has moved on (the rebalance
        // that follows drops the partitions) or the coordinator is away (the next checkpoint
        // commits again).
        let committed = consumer.commit(&tpl, CommitMode::Sync);
        metrics::get().committed(stage::DETECT, committed.is_ok());
        if let Err(e) = committed {
            tracing::warn!(error = %e, "commit after checkpoint failed (committed again at the next checkpoint)");
        }
        m.checkpoint_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(partitions = ?chosen, "checkpoint written and committed");
        Ok(())
    }

    /// The latest checkpoint of a partition: the local file when it is as new as the
    /// changelog, else the changelog.
    pub(super) fn restore(&self, cfg: &Config, topic: &str, partition: i32) -> Result<Part, Error> {
        let src = Src {
            topic: topic.to_string(),
            partition,
            changelog: if self.repartitioned {
                partition
            } else {
                (crate::baseline::hash_identity(&format!("{topic}/{partition}"))
                    % self.changelog_partitions.max(1) as u32) as i32
            },
        };
        let local = match &self.state_dir {
            Some(dir) => match checkpoint::read_local(dir, topic, partition) {
                Ok(c) => c,
                Err(e) => {
                    metrics::get().error(stage::STATE, "local_checkpoint_unusable");
                    tracing::warn!(error = %e, "local checkpoint unusable; restoring from the changelog");
                    None
                }
            },
            None => None,
        };
        let end = checkpoint::end_offset(
            &self.watermarks,
            &self.changelog_topic,
            src.changelog,
            TIMEOUT,
        )?;
        let (cp, from) = match local {
            Some(c) if c.changelog_end == end => (Some(c), "local"),
            local => {
                let remote = checkpoint::read_changelog(
                    &self.k,
                    &self.group,
                    &self.producer,
                    &self.deliveries,
                    &self.changelog_topic,
                    &src,
                    TIMEOUT,
                )?;
                match (local, remote) {
                    (Some(l), Some(r)) if l.epoch > r.epoch => (Some(l), "local"),
                    (_, Some(r)) => (Some(r), "changelog"),
                    (l, None) => (l, "local"),
                }
            }
        };
        let mut engine = cfg.engine(None).map_err(|e| Error::Setup(e.to_string()))?;
        let cp_alerts_from = cp.as_ref().map(|c| c.alerts_from.clone());
        let (next_offset, epoch, marks) = match cp {
            // The first checkpoint of a new owner skips an epoch: a previous owner that
            // stood still and writes once more before it learns it lost the partition writes
            // the next epoch at most, which then never wins over this owner's.
            Some(cp) => {
                engine.restore_bytes(&cp.engine).map_err(|e| Error::State {
                    partition,
                    message: format!("cannot decode state: {e}"),
                })?;
                tracing::info!(
                    topic,
                    partition,
                    from,
                    epoch = cp.epoch,
                    next_offset = cp.next_offset,
                    identities = engine.identity_count(),
                    "partition state restored"
                );
                (cp.next_offset, cp.epoch + 1, cp.marks.to_map())
            }
            None => {
                tracing::info!(
                    topic,
                    partition,
                    "no checkpoint yet; partition starts empty"
                );
                (0, 0, HashMap::new())
            }
        };
        // The alerts a previous owner sent for records after this checkpoint (before it
        // crashed or lost the partition): processed again, they keep their ids and are not
        // sent to the alerts topic twice.
        let sent = match (&cp_alerts_from, &self.alerts_topic) {
            (Some(from), Some(topic)) => {
                // Alerts this instance sent before it lost the partition may still be in
                // flight (the broker was away and the producer retries them): wait for them,
                // so the topic shows every alert already sent and none is sent again. Still
                // undelivered when the time is up: the cluster is unavailable, and the
                // restore is tried again later.
                {
                    use rdkafka::producer::Producer as _;
                    self.producer
                        .flush(TIMEOUT)
                        .map_err(|e| Error::Unavailable {
                            message: format!("flush before reading the alerts sent: {e}"),
                        })?;
                }
                checkpoint::sent_alert_ids(&self.k, &self.group, topic, from, TIMEOUT)?
            }
            _ => HashSet::new(),
        };
        if !sent.is_empty() {
            tracing::info!(
                topic,
                partition,
                alerts = sent.len(),
                "alerts sent after the checkpoint found on the alerts topic; they are not sent again"
            );
        }
        let from = if next_offset == 0 && epoch == 0 {
            "empty"
        } else {
            from
        };
        metrics::get().restores.with_label_values(&[from]).inc();
        let part = Part {
            src,
            engine,
            next_offset,
            epoch,
            marks,
            dirty: false,
            warned_gap: false,
            sent,
            withheld: Vec::new(),
        };
        Ok(part)
    }
}
