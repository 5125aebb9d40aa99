//! Which CPUs the shards run on.
//!
//! This module owns the choice of cores: it asks hwloc for the CPUs this
//! process may use, keeps one hardware thread per physical core (two shards
//! on hyper-threads of one core would fight for it), and puts the cores on
//! the NVMe device's NUMA node first. It must never pin threads or start
//! anything: the reactor pins, the node decides when. If hwloc cannot read
//! the machine, it falls back to `core_affinity`'s list of CPUs and says so.

use std::fmt;

use hwlocality::object::types::ObjectType;
use hwlocality::topology::builder::TypeFilter;
use hwlocality::Topology;

use crate::config::ReactorConfig;

/// Where the list of CPUs came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoreSource {
    /// hwloc: one hardware thread per physical core.
    Hwloc,
    /// `core_affinity`, because hwloc could not read the machine: every
    /// CPU, hyper-threads included.
    CoreAffinity,
}

/// The CPUs this process may run shards on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// One CPU id per physical core, the device-local ones first.
    pub candidates: Vec<usize>,
    /// Every CPU id the process may use (any of these can be named in
    /// `reactor.cores`).
    pub allowed: Vec<usize>,
    /// How many of the first `candidates` are on the device's NUMA node;
    /// `None` when the device's locality is unknown.
    pub device_local: Option<usize>,
    pub source: CoreSource,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(
        "reactor.cores names CPU {} that this machine does not have or does not allow this process to use; \
         available CPUs are {available:?}: fix reactor.cores or leave it empty",
        join(unknown)
    )]
    UnknownCpus { unknown: Vec<usize>, available: Vec<usize> },
    #[error(
        "reactor.shards = {shards} but only {} cores are available ({available:?}); \
         set reactor.shards = 0 for one shard per core, or at most {}",
        available.len(),
        available.len()
    )]
    TooFewCores { shards: usize, available: Vec<usize> },
    #[error("found no CPU to run shards on (hwloc and core_affinity both came back empty)")]
    NoCores,
}

fn join(cpus: &[usize]) -> String {
    let names: Vec<String> = cpus.iter().map(usize::to_string).collect();
    names.join(", ")
}

impl fmt::Display for CoreSource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            CoreSource::Hwloc => "hwloc",
            CoreSource::CoreAffinity => "core_affinity",
        })
    }
}

/// Reads the machine: hwloc when it works, `core_affinity` otherwise.
/// `pci_address` ("0000:3b:00.0") is the NVMe controller's, when known.
pub fn discover(pci_address: Option<&str>) -> Result<Machine, TopologyError> {
    match discover_with_hwloc(pci_address) {
        Ok(machine) if !machine.candidates.is_empty() => return Ok(machine),
        Ok(_) => tracing::warn!("hwloc found no allowed CPU; falling back to core_affinity's list of CPUs"),
        Err(error) => tracing::warn!(
            "hwloc cannot read this machine's topology ({error}); falling back to core_affinity's list of CPUs, \
             which counts hyper-threads as cores and knows nothing of NUMA"
        ),
    }
    let mut cpus: Vec<usize> =
        core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|core| core.id).collect();
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        return Err(TopologyError::NoCores);
    }
    Ok(Machine {
        candidates: cpus.clone(),
        allowed: cpus,
        device_local: None,
        source: CoreSource::CoreAffinity,
    })
}

fn discover_with_hwloc(pci_address: Option<&str>) -> Result<Machine, String> {
    let topology = match pci_address {
        // PCI objects are filtered out by default; keep the important ones
        // only when there is a device to look for.
        Some(_) => Topology::builder()
            .with_io_type_filter(TypeFilter::KeepImportant)
            .map_err(|error| error.to_string())?
            .build()
            .map_err(|error| error.to_string())?,
        None => Topology::new().map_err(|error| error.to_string())?,
    };
    let allowed_set = topology.allowed_cpuset();
    let allowed: Vec<usize> = allowed_set.iter_set().map(usize::from).collect();

    let mut candidates: Vec<usize> = topology
        .objects_with_type(ObjectType::Core)
        .filter_map(|core| core.cpuset())
        .filter_map(|cpus| cpus.iter_set().map(usize::from).find(|cpu| allowed_set.is_set(*cpu)))
        .collect();
    if candidates.is_empty() {
        // Some virtual machines report no Core objects: every PU is a core.
        candidates = allowed.clone();
    }
    candidates.sort_unstable();
    candidates.dedup();

    let mut device_local = None;
    if let Some(address) = pci_address {
        let device = topology.pci_device_by_bus_id_string(address).ok().flatten();
        let local_cpus =
            device.and_then(|device| device.first_non_io_ancestor()).and_then(|parent| parent.cpuset());
        match local_cpus {
            Some(local_cpus) => {
                // Stable: device-local cores first, each group in CPU order.
                candidates.sort_by_key(|cpu| !local_cpus.is_set(*cpu));
                let local = candidates.iter().filter(|cpu| local_cpus.is_set(**cpu)).count();
                tracing::info!("NVMe device {address} is local to {local} of {} cores", candidates.len());
                device_local = Some(local);
            }
            None => tracing::warn!(
                "NVMe device {address} is not in hwloc's PCI tree; choosing cores without regard to its NUMA node"
            ),
        }
    }
    Ok(Machine { candidates, allowed, device_local, source: CoreSource::Hwloc })
}

impl Machine {
    /// The CPU of each shard, in shard order, as `reactor` asks: the explicit
    /// `cores` list when given, else `shards` candidates (or one per
    /// candidate, at most `shards_max`, when `shards` is 0), taken in order
    /// from `start` on, round the device-local ones when they are enough,
    /// else round all. Members sharing a machine (a test or benchmark
    /// cluster) start at different places, so the replicas of a group do
    /// not all take turns on one core while another idles; on a machine of
    /// its own a member's start changes nothing it can measure.
    pub fn choose(&self, reactor: &ReactorConfig, start: usize) -> Result<Vec<usize>, TopologyError> {
        if !reactor.cores.is_empty() {
            let unknown: Vec<usize> =
                reactor.cores.iter().copied().filter(|cpu| !self.allowed.contains(cpu)).collect();
            if !unknown.is_empty() {
                return Err(TopologyError::UnknownCpus { unknown, available: self.allowed.clone() });
            }
            let count = if reactor.shards == 0 {
                reactor.cores.len()
            } else {
                reactor.shards.min(reactor.cores.len())
            };
            return Ok(reactor.cores[..count].to_vec());
        }
        if self.candidates.is_empty() {
            return Err(TopologyError::NoCores);
        }
        let count =
            if reactor.shards == 0 { self.candidates.len().min(reactor.shards_max) } else { reactor.shards };
        if count > self.candidates.len() {
            return Err(TopologyError::TooFewCores { shards: count, available: self.candidates.clone() });
        }
        let pool = match self.device_local {
            Some(local) if local >= count && local > 0 => local,
            _ => self.candidates.len(),
        };
        Ok((0..count).map(|shard| self.candidates[(start + shard) % pool]).collect())
    }
}

/// Reads the machine and chooses the shards' CPUs in one step.
pub fn choose_cores(
    reactor: &ReactorConfig,
    pci_address: Option<&str>,
    start: usize,
) -> Result<Vec<usize>, TopologyError> {
    let machine = discover(pci_address)?;
    let cores = machine.choose(reactor, start)?;
    tracing::debug!(source = %machine.source, candidates = ?machine.candidates, ?cores, "chose cores for the shards");
    Ok(cores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CPU_ID_LIMIT;

    #[test]
    fn discovery_finds_at_least_one_core() {
        let machine = discover(None).expect("this machine has a CPU");
        assert!(!machine.candidates.is_empty());
        assert!(machine.candidates.iter().all(|cpu| machine.allowed.contains(cpu)), "{machine:?}");
        let cores = choose_cores(&ReactorConfig::default(), None, 0).expect("defaults choose cores");
        assert!(!cores.is_empty() && cores.len() <= ReactorConfig::default().shards_max, "{cores:?}");
    }

    #[test]
    fn an_unknown_device_falls_back_to_every_core() {
        let machine = discover(Some("ffff:ff:1f.7")).expect("discovery works without the device");
        assert_eq!(machine.device_local, None);
        assert!(!machine.candidates.is_empty());
    }

    #[test]
    fn an_explicit_list_is_honoured() {
        let machine = discover(None).expect("this machine has a CPU");
        let last = *machine.allowed.last().expect("one CPU at least");
        let reactor = ReactorConfig { cores: vec![last], ..ReactorConfig::default() };
        assert_eq!(machine.choose(&reactor, 0).expect("an allowed CPU is accepted"), vec![last]);
    }

    #[test]
    fn an_unknown_cpu_is_refused_by_number() {
        let machine = discover(None).expect("this machine has a CPU");
        let first = machine.allowed[0];
        let reactor = ReactorConfig { cores: vec![first, CPU_ID_LIMIT], ..ReactorConfig::default() };
        let error = machine.choose(&reactor, 0).expect_err("CPU 4095 is not on this machine");
        let message = error.to_string();
        assert!(message.contains(&format!("CPU {CPU_ID_LIMIT} ")), "{message}");
        assert!(message.contains("reactor.cores"), "{message}");
    }

    #[test]
    fn shard_counts_follow_the_config() {
        let machine = Machine {
            candidates: vec![0, 2, 4, 6],
            allowed: (0..8).collect(),
            device_local: None,
            source: CoreSource::Hwloc,
        };
        let choose = |shards, shards_max| {
            machine.choose(&ReactorConfig { shards, shards_max, ..ReactorConfig::default() }, 0)
        };
        assert_eq!(choose(0, 16).expect("one per core"), vec![0, 2, 4, 6]);
        assert_eq!(choose(0, 3).expect("capped by shards_max"), vec![0, 2, 4]);
        assert_eq!(choose(2, 16).expect("explicit count"), vec![0, 2]);
        let error = choose(5, 16).expect_err("more shards than cores");
        assert!(error.to_string().contains("reactor.shards = 5 but only 4 cores"), "{error}");
    }

    /// Three members sharing a machine, one shard each: each starts one
    /// core further along, so the three replicas of a group do not all take
    /// turns on the first core. Turning only the cores a member chose (what
    /// the code did) left every one-shard member on the first.
    #[test]
    fn members_sharing_a_machine_start_their_shards_apart() {
        let machine = Machine {
            candidates: vec![0, 1],
            allowed: vec![0, 1],
            device_local: None,
            source: CoreSource::Hwloc,
        };
        let one = ReactorConfig { shards: 1, ..ReactorConfig::default() };
        let chosen: Vec<Vec<usize>> =
            (0..3).map(|member| machine.choose(&one, member).expect("one shard fits")).collect();
        assert_eq!(chosen, vec![vec![0], vec![1], vec![0]]);
        let two = ReactorConfig { shards: 2, ..ReactorConfig::default() };
        assert_eq!(machine.choose(&two, 1).expect("two shards fit"), vec![1, 0]);
        // The device-local cores first, and only them while they are enough.
        let local = Machine {
            candidates: vec![4, 5, 0, 1],
            allowed: (0..6).collect(),
            device_local: Some(2),
            source: CoreSource::Hwloc,
        };
        assert_eq!(local.choose(&one, 1).expect("fits"), vec![5]);
        assert_eq!(local.choose(&one, 2).expect("fits"), vec![4]);
        let three = ReactorConfig { shards: 3, ..ReactorConfig::default() };
        assert_eq!(local.choose(&three, 1).expect("fits"), vec![5, 0, 1]);
    }
}
