//! The programmer task and its [`Handle`].
//!
//! Owns: the desired state, the last observation of the kernel (a cache between full reads),
//! the counters. The task itself only waits (commands, monitor kicks, the resync timer); each
//! reconcile runs on a blocking thread with the [`Engine`] moved in and back, so a 100k-route
//! batch never stalls the runtime. It never touches objects of other protocols (see `diff`).
//!
//! A reconcile after a command trusts the cache (the monitor invalidates it when anyone else
//! changes something of ours); one after a kick or the timer re-reads everything first.

use std::collections::{BTreeMap, HashSet};

use super::FastSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::rule::RuleMessage;
use netlink_packet_route::RouteNetlinkMessage as M;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::batch::Netlink;
use super::diff::{self, Observed};
use super::monitor::RouteGroups;
use super::routes::{self, DesiredRoutes, ObservedRoute, RouteChange, RouteKey, RouteSpec};
use super::rules::{self, ObservedRule, RuleSpec};
use super::tables::{AddressTable, HostAddr, Link};
use super::{KernelConfig, KernelError};

/// Writes of at least this many routes leave the monitor's route groups while they run.
const MUTE_ROUTES: usize = 1024;

/// Notifications arriving within this window are handled by one full reconcile.
const DEBOUNCE: Duration = Duration::from_millis(30);

/// A route the kernel refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Table and prefix.
    pub key: RouteKey,
    /// The errno's text, e.g. "Network is unreachable (os error 101)" for a next hop that is not
    /// directly reachable.
    pub reason: String,
}

/// What one reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Routes created.
    pub added: usize,
    /// Routes whose next hops changed.
    pub replaced: usize,
    /// Routes deleted.
    pub removed: usize,
    /// Rules created or deleted.
    pub rules_changed: usize,
    /// Routes or rules the kernel refused.
    pub failed: usize,
    /// Wall time, observation included.
    pub duration: Duration,
}

/// The programmer's state, for status pages and tests.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Routes of ours now in the kernel (as last observed or written), all tables.
    pub owned_routes: usize,
    /// Rules of ours now in the kernel.
    pub rules: Vec<RuleSpec>,
    /// The per-address tables.
    pub tables: Vec<AddressTable>,
    /// Routes created or replaced since start.
    pub installed: u64,
    /// Routes deleted since start.
    pub removed: u64,
    /// Routes and rules of ours that someone else removed and we put back.
    pub repaired: u64,
    /// Reconciles run.
    pub reconciles: u64,
    /// Duration of the last reconcile.
    pub last_reconcile: Duration,
    /// Routes the kernel refused in the last reconcile (e.g. next hop not directly reachable).
    pub failures: Vec<Failure>,
    /// Wanted keys held by another protocol's route (left alone).
    pub conflicts: Vec<RouteKey>,
    /// Desired prefixes that could not be resolved (unknown or down interface).
    pub unresolved: Vec<(IpNet, String)>,
    /// The last error of a reconcile, if it failed.
    pub last_error: Option<String>,
}

enum Command {
    Set(DesiredRoutes, oneshot::Sender<Result<Report, String>>),
    Update(Vec<RouteChange>, oneshot::Sender<Result<Report, String>>),
    Resync(oneshot::Sender<Result<Report, String>>),
    Snapshot(oneshot::Sender<Snapshot>),
    Routes(oneshot::Sender<BTreeMap<RouteKey, RouteSpec>>),
    Shutdown(oneshot::Sender<()>),
}

/// The handle to a running programmer. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
}

impl Handle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, KernelError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| KernelError::Stopped)?;
        rx.await.map_err(|_| KernelError::Stopped)
    }

    /// Replaces the whole desired main-table state and converges; returns once applied. Our
    /// routes not in it are swept (the first call after a restart is where stale ones go).
    pub async fn set_routes(&self, routes: DesiredRoutes) -> Result<Report, KernelError> {
        self.ask(|tx| Command::Set(routes, tx))
            .await?
            .map_err(|e| KernelError::Io {
                what: "reconcile",
                source: std::io::Error::other(e),
            })
    }

    /// Applies changes to the desired state and converges. Before any [`Handle::set_routes`],
    /// the desired state starts empty.
    pub async fn update(&self, changes: Vec<RouteChange>) -> Result<Report, KernelError> {
        self.ask(|tx| Command::Update(changes, tx))
            .await?
            .map_err(|e| KernelError::Io {
                what: "reconcile",
                source: std::io::Error::other(e),
            })
    }

    /// Re-reads the kernel and converges now.
    pub async fn resync(&self) -> Result<Report, KernelError> {
        self.ask(Command::Resync)
            .await?
            .map_err(|e| KernelError::Io {
                what: "reconcile",
                source: std::io::Error::other(e),
            })
    }

    /// Counters and status.
    pub async fn snapshot(&self) -> Result<Snapshot, KernelError> {
        self.ask(Command::Snapshot).await
    }

    /// Every route of ours, by table and prefix.
    pub async fn routes(&self) -> Result<BTreeMap<RouteKey, RouteSpec>, KernelError> {
        self.ask(Command::Routes).await
    }

    /// Stops the programmer. Routes and rules stay in the kernel: a restarted programmer adopts
    /// them, and forwarding continues meanwhile.
    pub async fn shutdown(&self) -> Result<(), KernelError> {
        self.ask(Command::Shutdown).await
    }
}

/// Starts the kernel programmer.
pub struct Programmer;

impl Programmer {
    /// Opens the netlink sockets in the calling thread's network namespace and spawns the task
    /// on the current tokio runtime. The task first adopts what is ours in the kernel (nothing
    /// is flushed), then follows commands, notifications and the resync timer.
    pub fn start(config: KernelConfig) -> Result<Handle, KernelError> {
        config.validate()?;
        let nl = Netlink::open()?;
        let (mon, route_groups) = super::monitor::open()?;
        let (kick_tx, kick_rx) = mpsc::channel(1);
        let monitor = tokio::spawn(super::monitor::run(
            mon,
            config.clone(),
            nl.port_id(),
            kick_tx.clone(),
        ));
        let (tx, rx) = mpsc::channel(64);
        let engine = Engine {
            cfg: config,
            nl,
            route_groups,
            kick: kick_tx,
            desired: None,
            cache: None,
            owned_before: FastSet::default(),
            rules_before: HashSet::new(),
            snap: Snapshot::default(),
        };
        let span = tracing::info_span!("kernel", proto = engine.cfg.route_protocol);
        tokio::spawn(
            async move {
                task(engine, rx, kick_rx).await;
                monitor.abort();
            }
            .instrument(span),
        );
        Ok(Handle { tx })
    }
}

async fn task(engine: Engine, mut rx: mpsc::Receiver<Command>, mut kick: mpsc::Receiver<()>) {
    let mut resync = tokio::time::interval(engine.cfg.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut engine = Some(engine);
    // The first tick fires at once: the start-up adopt-and-converge.
    loop {
        let Some(e) = engine.take() else { return };
        let (e, cmd) = tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                None => return,
                Some(c) => (Some(e), Some(c)),
            },
            Some(()) = kick.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while kick.try_recv().is_ok() {}
                (reconcile(e, true).await.0, None)
            }
            _ = resync.tick() => (reconcile(e, true).await.0, None),
        };
        let Some(mut e) = e else {
            tracing::error!("kernel programmer engine lost (reconcile panicked); stopping");
            return;
        };
        let Some(cmd) = cmd else {
            engine = Some(e);
            continue;
        };
        match cmd {
            Command::Set(d, reply) => {
                e.desired = Some(d);
                let (e, r) = reconcile(e, false).await;
                let _ = reply.send(r);
                engine = e;
            }
            Command::Update(changes, reply) => {
                let d = e.desired.get_or_insert_with(DesiredRoutes::new);
                for c in changes {
                    match c {
                        RouteChange::Set(p, hops) => d.insert(p, hops),
                        RouteChange::Remove(p) => {
                            d.routes.remove(&p.trunc());
                        }
                    }
                }
                let (e, r) = reconcile(e, false).await;
                let _ = reply.send(r);
                engine = e;
            }
            Command::Resync(reply) => {
                let (e, r) = reconcile(e, true).await;
                let _ = reply.send(r);
                engine = e;
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(e.snap.clone());
                engine = Some(e);
            }
            Command::Routes(reply) => {
                let _ = reply.send(e.owned_routes());
                engine = Some(e);
            }
            Command::Shutdown(reply) => {
                tracing::info!("kernel programmer stopped; routes and rules left in place");
                let _ = reply.send(());
                return;
            }
        }
    }
}

/// Runs one reconcile on a blocking thread. `None` engine: the reconcile panicked.
async fn reconcile(mut e: Engine, full: bool) -> (Option<Engine>, Result<Report, String>) {
    match tokio::task::spawn_blocking(move || {
        let r = e.reconcile(full);
        (e, r)
    })
    .await
    {
        Ok((e, r)) => (Some(e), r.map_err(|err| err.to_string())),
        Err(join) => (None, Err(format!("reconcile task failed: {join}"))),
    }
}

/// Everything a reconcile needs; moved to a blocking thread and back.
struct Engine {
    cfg: KernelConfig,
    nl: Netlink,
    /// The monitor's route group membership, left during big writes of ours.
    route_groups: RouteGroups,
    /// Asks the task for a full reconcile (as the monitor does).
    kick: mpsc::Sender<()>,
    desired: Option<DesiredRoutes>,
    /// What the kernel holds, as of the last full read plus our successful writes since.
    cache: Option<Observed>,
    /// Our keys after the last reconcile: a full read that misses one of them found a repair.
    owned_before: FastSet<RouteKey>,
    rules_before: HashSet<RuleSpec>,
    snap: Snapshot,
}

#[derive(Clone, Copy)]
enum Tag {
    RuleDel(usize),
    RouteAdd(usize),
    RouteReplace(usize),
    RuleAdd(usize),
    RouteDel(usize),
}

/// `RTM_NEWRULE`.
const RTM_NEWRULE: u16 = 32;
/// `RTM_DELRULE`.
const RTM_DELRULE: u16 = 33;

/// Appends a rule body to a send buffer (rules are few: one per host address).
fn emit(buf: &mut Vec<u8>, m: &RuleMessage) {
    use netlink_packet_core::Emitable;
    let at = buf.len();
    buf.resize(at + m.buffer_len(), 0);
    m.emit(&mut buf[at..]);
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

impl Engine {
    fn owned_routes(&self) -> BTreeMap<RouteKey, RouteSpec> {
        self.cache
            .iter()
            .flat_map(|c| c.routes.iter())
            .filter(|r| r.protocol == self.cfg.route_protocol)
            .map(|r| (r.key, r.spec.clone()))
            .collect()
    }

    fn reconcile(&mut self, full: bool) -> Result<Report, KernelError> {
        let res = self.reconcile_inner(full);
        if let Err(e) = &res {
            tracing::warn!(error = %e, "kernel reconcile failed; will re-read and retry on the next event or resync");
            self.snap.last_error = Some(e.to_string());
            self.cache = None;
        }
        res
    }

    fn reconcile_inner(&mut self, full: bool) -> Result<Report, KernelError> {
        let started = Instant::now();
        let mut obs = match self.cache.take() {
            Some(c) if !full => c,
            _ => self.observe()?,
        };
        let t_observed = started.elapsed();
        let proto = self.cfg.route_protocol;
        let target = diff::target(&self.cfg, self.desired.as_ref(), &obs);
        let plan = diff::plan(&self.cfg, &target, &obs);
        let t_planned = started.elapsed();

        // Requests in plan order: rule deletes, route adds, replaces, rule adds, route deletes.
        let n_rd = plan.rule_dels.len();
        let n_ra = n_rd + plan.route_adds.len();
        let n_rr = n_ra + plan.route_replaces.len();
        let n_ua = n_rr + plan.rule_adds.len();
        let total = n_ua + plan.route_dels.len();
        let tag = |i: usize| {
            if i < n_rd {
                Tag::RuleDel(i)
            } else if i < n_ra {
                Tag::RouteAdd(i - n_rd)
            } else if i < n_rr {
                Tag::RouteReplace(i - n_ra)
            } else if i < n_ua {
                Tag::RuleAdd(i - n_rr)
            } else {
                Tag::RouteDel(i - n_ua)
            }
        };
        // Big writes go out with the monitor off the route groups (see `RouteGroups`); what
        // others changed meanwhile is caught by the full re-read asked for below.
        let muted = total - plan.rule_dels.len() - plan.rule_adds.len() >= MUTE_ROUTES
            && match self.route_groups.leave() {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "could not leave the route groups; writing with notifications");
                    false
                }
            };
        let results = if total == 0 {
            Ok(Vec::new())
        } else {
            self.nl.execute(total, |i, buf| match tag(i) {
                Tag::RuleDel(j) => {
                    emit(buf, &rules::encode_del(&plan.rule_dels[j], proto));
                    (RTM_DELRULE, 0)
                }
                Tag::RouteAdd(j) => {
                    let (k, s) = &plan.route_adds[j];
                    routes::write_new(buf, k, s, proto);
                    (routes::RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL)
                }
                Tag::RouteReplace(j) => {
                    let (k, s) = &plan.route_replaces[j];
                    routes::write_new(buf, k, s, proto);
                    (routes::RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE)
                }
                Tag::RuleAdd(j) => {
                    emit(buf, &rules::encode_new(&plan.rule_adds[j], proto));
                    (RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL)
                }
                Tag::RouteDel(j) => {
                    routes::write_del(buf, &plan.route_dels[j], proto);
                    (routes::RTM_DELROUTE, 0)
                }
            })
        };
        if muted {
            if let Err(e) = self.route_groups.join() {
                // Without route notifications only the resync timer would notice repairs.
                tracing::warn!(error = %e, "could not rejoin the route groups");
            }
            // A full kick queue already means a full reconcile is coming.
            let _ = self.kick.try_send(());
        }
        let results = results?;
        let t_written = started.elapsed();

        let mut report = Report::default();
        let mut failures = Vec::new();
        let mut written: Vec<(RouteKey, RouteSpec)> = Vec::new();
        let mut gone: FastSet<RouteKey> = FastSet::default();
        let mut rules_added = Vec::new();
        let mut rules_gone = HashSet::new();
        let mut repaired = 0u64;
        for (i, errno) in results.into_iter().enumerate() {
            let tag = tag(i);
            match tag {
                Tag::RouteAdd(i) | Tag::RouteReplace(i) => {
                    let (k, s) = match tag {
                        Tag::RouteAdd(_) => &plan.route_adds[i],
                        _ => &plan.route_replaces[i],
                    };
                    // EEXIST on create: the route is already there (a race with our own view).
                    let ok =
                        errno == 0 || (errno == libc::EEXIST && matches!(tag, Tag::RouteAdd(_)));
                    if ok {
                        if matches!(tag, Tag::RouteAdd(_)) {
                            report.added += 1;
                            if full && self.owned_before.contains(k) {
                                repaired += 1;
                            }
                        } else {
                            // Only a replace has an entry of ours in the cache to drop: an add's
                            // key had none (the plan adds only keys without a route of ours).
                            report.replaced += 1;
                            gone.insert(*k);
                        }
                        written.push((*k, RouteSpec::clone(s)));
                    } else {
                        report.failed += 1;
                        failures.push(Failure {
                            key: *k,
                            reason: errno_text(errno),
                        });
                    }
                }
                Tag::RouteDel(i) => {
                    // ENOENT/ESRCH: already gone, which is what we wanted.
                    if errno == 0 || errno == libc::ENOENT || errno == libc::ESRCH {
                        report.removed += 1;
                        gone.insert(plan.route_dels[i]);
                    } else {
                        report.failed += 1;
                        failures.push(Failure {
                            key: plan.route_dels[i],
                            reason: format!("delete: {}", errno_text(errno)),
                        });
                    }
                }
                Tag::RuleAdd(i) => {
                    if errno == 0 || errno == libc::EEXIST {
                        report.rules_changed += 1;
                        if full && self.rules_before.contains(&plan.rule_adds[i]) {
                            repaired += 1;
                        }
                        rules_added.push(plan.rule_adds[i]);
                    } else {
                        report.failed += 1;
                        tracing::warn!(rule = ?plan.rule_adds[i], error = %errno_text(errno), "kernel refused a rule");
                    }
                }
                Tag::RuleDel(i) => {
                    if errno == 0 || errno == libc::ENOENT {
                        report.rules_changed += 1;
                        rules_gone.insert(plan.rule_dels[i]);
                    } else {
                        report.failed += 1;
                        tracing::warn!(rule = ?plan.rule_dels[i], error = %errno_text(errno), "kernel could not delete a rule");
                    }
                }
            }
        }

        // Fold our writes into the cached observation.
        if !gone.is_empty() {
            obs.routes
                .retain(|r| r.protocol != proto || !gone.contains(&r.key));
        }
        obs.routes
            .extend(written.into_iter().map(|(key, spec)| ObservedRoute {
                key,
                protocol: proto,
                spec,
            }));
        obs.rules
            .retain(|r| r.protocol != proto || !rules_gone.contains(&r.spec));
        obs.rules
            .extend(rules_added.into_iter().map(|spec| ObservedRule {
                spec,
                protocol: proto,
            }));

        for f in failures.iter().take(5) {
            tracing::warn!(table = f.key.table, prefix = %f.key.prefix, reason = %f.reason,
                "kernel refused a route; check that its next hop is directly reachable");
        }
        if failures.len() > 5 {
            tracing::warn!(more = failures.len() - 5, "further routes refused");
        }
        if !plan.conflicts.is_empty() {
            tracing::warn!(count = plan.conflicts.len(), first = ?plan.conflicts.first(),
                "wanted prefixes are held by routes of other protocols; left alone");
        }
        if repaired > 0 {
            tracing::info!(
                repaired,
                "restored routes or rules of ours that were removed"
            );
        }

        self.owned_before = obs
            .routes
            .iter()
            .filter(|r| r.protocol == proto)
            .map(|r| r.key)
            .collect();
        self.rules_before = obs
            .rules
            .iter()
            .filter(|r| r.protocol == proto)
            .map(|r| r.spec)
            .collect();
        report.duration = started.elapsed();
        let s = &mut self.snap;
        s.owned_routes = self.owned_before.len();
        s.rules = self.rules_before.iter().copied().collect();
        s.rules.sort();
        s.conflicts = plan.conflicts;
        s.tables = target.tables;
        s.installed += (report.added + report.replaced) as u64;
        s.removed += report.removed as u64;
        s.repaired += repaired;
        s.reconciles += 1;
        s.last_reconcile = report.duration;
        s.failures = failures;
        s.unresolved = target.unresolved;
        s.last_error = None;
        self.cache = Some(obs);
        tracing::debug!(
            ?report,
            full,
            ?t_observed,
            ?t_planned,
            ?t_written,
            "kernel reconcile"
        );
        Ok(report)
    }

    /// Reads links, addresses, routes and rules.
    fn observe(&mut self) -> Result<Observed, KernelError> {
        let mut obs = Observed::default();
        for m in self.nl.dump("links", M::GetLink(LinkMessage::default()))? {
            if let M::NewLink(l) = m {
                if let Some(link) = decode_link(&l) {
                    obs.links.push(link);
                }
            }
        }
        for m in self
            .nl
            .dump("addresses", M::GetAddress(AddressMessage::default()))?
        {
            if let M::NewAddress(a) = m {
                if let Some(addr) = decode_addr(&a) {
                    obs.addrs.push(addr);
                }
            }
        }
        for m in self
            .nl
            .dump("routes", M::GetRoute(RouteMessage::default()))?
        {
            if let M::NewRoute(r) = m {
                if let Some(route) = routes::decode(&r) {
                    obs.routes.push(route);
                }
            }
        }
        for m in self.nl.dump("rules", M::GetRule(RuleMessage::default()))? {
            if let M::NewRule(r) = m {
                if let Some(rule) = rules::decode(&r) {
                    obs.rules.push(rule);
                }
            }
        }
        Ok(obs)
    }
}

fn decode_link(l: &LinkMessage) -> Option<Link> {
    let name = l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })?;
    Some(Link {
        index: l.header.index,
        name,
        up: l.header.flags.contains(LinkFlags::Up),
    })
}

fn decode_addr(a: &AddressMessage) -> Option<HostAddr> {
    let mut local = None;
    let mut address = None;
    let mut usable = true;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => {
                usable = !f.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed)
            }
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links.
    let addr: IpAddr = local.or(address)?;
    Some(HostAddr {
        ifindex: a.header.index,
        addr,
        prefix_len: a.header.prefix_len,
        global: usable && a.header.scope == AddressScope::Universe,
    })
}
