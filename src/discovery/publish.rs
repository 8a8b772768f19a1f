//! Merging provider snapshots into one table and publishing it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::table::order::KeptOrder;
use crate::table::spec::{Provider, ServiceSpec};
use crate::table::{pace, Builder, Readiness, StickyGlobals, Table};

/// The table as the data plane sees it: one atomic pointer, loaded per request.
pub type SharedTable = Arc<ArcSwap<Table>>;

/// Collects each provider's latest services and publishes a table when the merged view
/// changes. Providers call it from their own tasks; nothing here blocks a request.
#[derive(Debug)]
pub struct Publisher {
    table: SharedTable,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Latest snapshot per provider; a provider that has not reported yet is absent.
    snapshots: BTreeMap<Provider, Snapshot>,
    /// Providers that must report before the table is [`Readiness::Ready`].
    expected: BTreeSet<Provider>,
    /// The readiness of the current table; `None` before the first. Together with the
    /// per-provider comparison it tells whether a rebuild would change anything.
    published: Option<Readiness>,
    /// Builds each table from the last one's parts, and keeps the servers' runtime state.
    builder: Builder,
    /// Tables swapped out that a request may still hold. They are dropped here once nothing
    /// else holds them: otherwise the request finishing last would free thousands of servers
    /// on a worker, and worse, wait for allocator locks held by this lower-priority thread.
    retired: Vec<Arc<Table>>,
}

impl Publisher {
    /// A publisher whose table stays [`Readiness::Loading`] until every expected provider
    /// has reported once.
    pub fn new(expected: impl IntoIterator<Item = Provider>, sticky: StickyGlobals) -> Self {
        let expected: BTreeSet<Provider> = expected.into_iter().collect();
        let initial = if expected.is_empty() {
            Table {
                readiness: Readiness::Ready,
                ..Table::loading()
            }
        } else {
            Table::loading()
        };
        Self {
            table: Arc::new(ArcSwap::from_pointee(initial)),
            state: Mutex::new(State {
                snapshots: BTreeMap::new(),
                expected,
                published: None,
                builder: Builder::new(sticky),
                retired: Vec::new(),
            }),
        }
    }

    pub fn table(&self) -> SharedTable {
        Arc::clone(&self.table)
    }

    /// Replaces one provider's services. Returns whether a new table was published. Takes
    /// milliseconds for large tables: providers call it from the control-plane thread.
    pub fn update(&self, provider: Provider, services: Vec<ServiceSpec>) -> bool {
        self.update_shared(provider, services.into_iter().map(Arc::new).collect())
    }

    /// [`Publisher::update`] for a provider that keeps its services between updates: passing
    /// the same `Arc` again for a service that did not change lets the comparison and the
    /// build skip it at the cost of a pointer comparison.
    pub fn update_shared(&self, provider: Provider, services: Vec<Arc<ServiceSpec>>) -> bool {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        let snapshot = Snapshot::sorted(services, state.snapshots.get(&provider));
        // Compared per provider, before anything is merged or copied: the Docker watcher
        // polls every few seconds and nearly every poll changes nothing. (`Arc`'s equality
        // takes the same pointer as equal without looking further.)
        let changed =
            state.snapshots.get(&provider).map(|s| &s.services) != Some(&snapshot.services);
        state.snapshots.insert(provider, snapshot);
        let readiness = if state
            .expected
            .iter()
            .all(|p| state.snapshots.contains_key(p))
        {
            Readiness::Ready
        } else {
            Readiness::Loading
        };
        if !changed && state.published == Some(readiness) {
            return false;
        }
        let buildable: Vec<&Arc<ServiceSpec>> =
            state.snapshots.values().flat_map(|s| &s.services).collect();
        let table = state.builder.build(&buildable, readiness);
        tracing::info!(
            provider = provider.as_str(),
            routers = table.routers.len(),
            services = table.services.len(),
            servers = table.server_count(),
            ready = readiness == Readiness::Ready,
            "publishing new routing table"
        );
        tracing::debug!(
            "configuration received from provider {}: {table}",
            provider.as_str()
        );
        let old = self.table.swap(Arc::new(table));
        state.retired.push(old);
        retire(&mut state.retired);
        state.published = Some(readiness);
        true
    }

    /// Frees the swapped-out tables no request holds any more. Providers call it on every
    /// poll, so that an old table does not outlive its last request by long.
    pub fn sweep(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        retire(&mut state.retired);
    }
}

/// One provider's services sorted by name, as the builder walks them.
#[derive(Debug)]
struct Snapshot {
    services: Vec<Arc<ServiceSpec>>,
    /// How the provider's order became `services`.
    order: KeptOrder,
}

impl Snapshot {
    /// Sorts `given` by name (stably). A provider gives its services in the same order from
    /// one update to the next (the file provider in file order), so the last sort's order
    /// usually serves again: it does when each service lands where one of the same name was.
    fn sorted(given: Vec<Arc<ServiceSpec>>, last: Option<&Snapshot>) -> Self {
        let (mut order, before) = match last {
            Some(last) => (last.order.clone(), &last.services[..]),
            None => (KeptOrder::default(), &[][..]),
        };
        let services = order.sort(
            given,
            before,
            |spec, before| Arc::ptr_eq(spec, before) || spec.name == before.name,
            |a, b| a.name.cmp(&b.name),
        );
        Self { services, order }
    }
}

/// `swap` has settled every reader's claim on a table into its reference count, so a count of
/// one means only `retired` holds it, and nothing can take a new reference.
fn retire(retired: &mut Vec<Arc<Table>>) {
    let (free, held): (Vec<_>, Vec<_>) = std::mem::take(retired)
        .into_iter()
        .partition(|t| Arc::strong_count(t) == 1);
    *retired = held;
    for table in free {
        free_paced(table);
    }
}

/// Frees a table a service at a time: freeing thousands of servers is long work too.
fn free_paced(table: Arc<Table>) {
    let Ok(table) = Arc::try_unwrap(table) else {
        return;
    };
    let Table {
        routers, services, ..
    } = table;
    for _router in routers {
        pace::breathe();
    }
    for _service in services {
        pace::breathe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_until_every_provider_reported_and_unchanged_updates_publish_nothing() {
        let p = Publisher::new([Provider::Docker, Provider::File], StickyGlobals::default());
        assert_eq!(p.table().load().readiness, Readiness::Loading);
        assert!(p.update(Provider::File, vec![]));
        assert_eq!(p.table().load().readiness, Readiness::Loading);
        assert!(p.update(Provider::Docker, vec![]));
        assert_eq!(p.table().load().readiness, Readiness::Ready);
        let before = Arc::as_ptr(&p.table().load_full());
        assert!(!p.update(Provider::Docker, vec![]));
        assert_eq!(before, Arc::as_ptr(&p.table().load_full()));
    }

    fn named(name: &str) -> Arc<ServiceSpec> {
        Arc::new(ServiceSpec {
            name: name.into(),
            provider: Provider::File,
            routers: Vec::new(),
            servers: Vec::new(),
            options: Default::default(),
            l4: Vec::new(),
        })
    }

    fn names(p: &Publisher) -> Vec<String> {
        let table = p.table().load_full();
        table.services.iter().map(|s| s.name.to_string()).collect()
    }

    #[test]
    fn services_are_in_name_order_whatever_order_the_provider_gives_them_in() {
        let p = Publisher::new([Provider::File], StickyGlobals::default());
        let (a, b, c) = (named("a"), named("b"), named("c"));
        assert!(p.update_shared(Provider::File, vec![c.clone(), a.clone(), b.clone()]));
        assert_eq!(names(&p), ["a", "b", "c"]);
        // The same names where they were: the last order is reused, and the table's "b"
        // is the new one.
        let mut b2 = (*b).clone();
        b2.options.pass_host_header = !b2.options.pass_host_header;
        assert!(p.update_shared(Provider::File, vec![c.clone(), a.clone(), Arc::new(b2)]));
        assert_eq!(names(&p), ["a", "b", "c"]);
        let table = p.table().load_full();
        assert_eq!(
            table.services[1].pass_host_header,
            !b.options.pass_host_header
        );
        // A renamed service, and two that swapped places: sorted again.
        assert!(p.update_shared(Provider::File, vec![c.clone(), named("z"), b.clone()]));
        assert_eq!(names(&p), ["b", "c", "z"]);
        assert!(p.update_shared(Provider::File, vec![b.clone(), c.clone(), a.clone()]));
        assert_eq!(names(&p), ["a", "b", "c"]);
        assert!(p.update_shared(Provider::File, vec![c, b]));
        assert_eq!(names(&p), ["b", "c"]);
    }

    #[test]
    fn a_swapped_out_table_is_freed_by_the_publisher_not_by_its_last_reader() {
        let p = Publisher::new([Provider::File], StickyGlobals::default());
        assert!(p.update(Provider::File, vec![]));
        let held = p.table().load_full();
        let spec = ServiceSpec {
            name: "a".into(),
            provider: Provider::File,
            routers: Vec::new(),
            servers: Vec::new(),
            options: Default::default(),
            l4: Vec::new(),
        };
        assert!(p.update(Provider::File, vec![spec]));
        // A request still holds the old table: it is kept, not freed.
        assert_eq!(Arc::strong_count(&held), 2);
        drop(p.table());
        let weak = Arc::downgrade(&held);
        drop(held);
        // The request let go, and did not free it: the publisher still has it...
        assert!(weak.upgrade().is_some());
        // ...until its next sweep.
        p.sweep();
        assert!(weak.upgrade().is_none());
    }
}
