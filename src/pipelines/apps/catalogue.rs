//! `apps`: the app catalogue, a global table ([`crate::kafka::global`]): every instance reads all
//! of it into one [`Catalogue`], which its mention-counting tasks match posts against and its
//! rankings read, whichever `posts` partitions the instance owns.
//!
//! A record (key = app id) adds an app or replaces it (a new name, new figures); a tombstone
//! removes it. A change applies to the posts processed after it.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hashbrown::HashMap;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::matcher::{app_name, lower_words, Matcher, Scratch, Slot};
use crate::engine::{Emit, Processor, RawRecord, RecordMeta, RejectClass, Rejection};
use crate::ingest::apps::{MAX_ID_BYTES, MAX_TEXT_BYTES, MAX_TRACK_NAME_BYTES};
use crate::pipelines::decode::{object, optional_str, optional_u64, required_str, required_u64, utf8_value};

/// An app id, shared by the catalogue, the counts and the outputs.
pub type AppId = Arc<str>;

/// One app of the catalogue: what rankings and mentions need of its record.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// The App Store id (the record's key).
    pub id: AppId,
    /// The name as listed.
    pub track_name: String,
    /// What posts mention it by: `track_name` cut at its tagline ([`app_name`]).
    pub name: String,
    /// Primary genre.
    pub prime_genre: String,
    /// User ratings, all versions.
    pub rating_count_tot: u64,
    /// User ratings, current version (0 when the record does not say).
    pub rating_count_ver: u64,
    /// Average user rating (0 to 5).
    pub user_rating: f64,
    /// Price.
    pub price: f64,
}

/// What an `apps` record asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogueChange<'a> {
    /// Add the app, or replace the app with this id.
    Upsert(App),
    /// Remove the app with this id (a tombstone).
    Remove(&'a str),
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    track_name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    size_bytes: Option<&'a RawValue>,
    #[serde(borrow, default)]
    currency: Option<&'a RawValue>,
    #[serde(borrow, default)]
    price: Option<&'a RawValue>,
    #[serde(borrow, default)]
    rating_count_tot: Option<&'a RawValue>,
    #[serde(borrow, default)]
    rating_count_ver: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_rating: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_rating_ver: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ver: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cont_rating: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prime_genre: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "sup_devices.num")]
    sup_devices_num: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "ipadSc_urls.num")]
    ipad_sc_urls_num: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "lang.num")]
    lang_num: Option<&'a RawValue>,
    #[serde(borrow, default)]
    vpp_lic: Option<&'a RawValue>,
}

/// A number field between 0 and `max`.
fn number(name: &str, raw: Option<&RawValue>, max: f64, required: bool) -> Result<Option<f64>, Rejection> {
    let raw = match raw {
        None => None,
        Some(r) if r.get() == "null" => None,
        Some(r) => Some(r),
    };
    let Some(raw) = raw else {
        return match required {
            true => Err(Rejection::new(RejectClass::MissingField, format!("field `{name}` is missing"))),
            false => Ok(None),
        };
    };
    let text = raw.get();
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Err(Rejection::new(
            RejectClass::WrongType,
            format!("field `{name}` must be a number, found {text:.40}"),
        ));
    }
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() && (0.0..=max).contains(&n) => Ok(Some(n)),
        _ => Err(Rejection::new(
            RejectClass::InvalidValue,
            format!("field `{name}` must be a number from 0 to {max}, got {text:.40}"),
        )),
    }
}

/// A string field of at most `max` bytes, not blank when `required`.
fn text<'a>(
    name: &str,
    raw: Option<&'a RawValue>,
    max: usize,
    required: bool,
) -> Result<Option<Cow<'a, str>>, Rejection> {
    let s = if required { Some(required_str(name, raw)?) } else { optional_str(name, raw)? };
    if let Some(s) = &s {
        if required && s.trim().is_empty() {
            return Err(Rejection::new(RejectClass::InvalidValue, format!("field `{name}` must not be blank")));
        }
        if s.len() > max {
            return Err(Rejection::new(
                RejectClass::TooLarge,
                format!("field `{name}` is {} bytes, more than the {max} allowed", s.len()),
            ));
        }
    }
    Ok(s)
}

/// Decodes an `apps` record: the key is the app id; a value must be the app's typed JSON (as
/// `pagepulse ingest apps` writes it) with the same `id`; a tombstone removes the app.
pub fn decode_app(rec: &RawRecord) -> Result<CatalogueChange<'_>, Rejection> {
    let key = rec.key.as_deref().ok_or_else(|| {
        Rejection::new(RejectClass::MissingField, "key is missing: `apps` records are keyed by app id")
    })?;
    let key =
        std::str::from_utf8(key).map_err(|_| Rejection::new(RejectClass::InvalidUtf8, "key is not valid UTF-8"))?;
    if key.trim().is_empty() || key.len() > MAX_ID_BYTES {
        return Err(Rejection::new(
            RejectClass::InvalidValue,
            format!("key must be an app id of 1 to {MAX_ID_BYTES} bytes, not blank"),
        ));
    }
    if rec.value.is_none() {
        return Ok(CatalogueChange::Remove(key));
    }
    let w: Wire<'_> = object(utf8_value(rec)?)?;
    let id = text("id", w.id, MAX_ID_BYTES, true)?.expect("required");
    if id != key {
        return Err(Rejection::new(
            RejectClass::InvalidValue,
            format!("field `id` ({id:.64}) does not match the key ({key})"),
        ));
    }
    let track_name = text("track_name", w.track_name, MAX_TRACK_NAME_BYTES, true)?.expect("required");
    let prime_genre = text("prime_genre", w.prime_genre, MAX_TEXT_BYTES, true)?.expect("required");
    let rating_count_tot = required_u64("rating_count_tot", w.rating_count_tot)?;
    let user_rating = number("user_rating", w.user_rating, 5.0, true)?.expect("required");
    let price = number("price", w.price, f64::MAX, true)?.expect("required");
    let rating_count_ver = optional_u64("rating_count_ver", w.rating_count_ver)?.unwrap_or(0);
    // The other columns are not used, but a producer that writes them writes them typed.
    number("user_rating_ver", w.user_rating_ver, 5.0, false)?;
    for (name, raw) in [("currency", w.currency), ("ver", w.ver), ("cont_rating", w.cont_rating)] {
        text(name, raw, MAX_TEXT_BYTES, false)?;
    }
    for (name, raw) in [
        ("size_bytes", w.size_bytes),
        ("sup_devices.num", w.sup_devices_num),
        ("ipadSc_urls.num", w.ipad_sc_urls_num),
        ("lang.num", w.lang_num),
        ("vpp_lic", w.vpp_lic),
    ] {
        optional_u64(name, raw)?;
    }
    Ok(CatalogueChange::Upsert(App {
        id: Arc::from(key),
        name: app_name(&track_name).to_string(),
        track_name: track_name.into_owned(),
        prime_genre: prime_genre.into_owned(),
        rating_count_tot,
        rating_count_ver,
        user_rating,
        price,
    }))
}

/// An app as the catalogue holds it: the app and its name's lower-cased words.
#[derive(Debug)]
struct Entry {
    app: Arc<App>,
    words: Vec<String>,
}

/// The catalogue's contents, under one lock.
#[derive(Debug, Default)]
struct Table {
    slots: Vec<Option<Entry>>,
    free: Vec<Slot>,
    by_id: HashMap<AppId, Slot>,
    matcher: Matcher,
}

/// The catalogue is full: a record of a new app was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the catalogue holds {0} apps, its bound (pipelines.apps.max_apps)")]
pub struct Full(pub usize);

/// The whole app catalogue, shared by the catalogue's reader (which writes it), every
/// mention-counting task and the rankings (which read it). Matching takes its read lock for one
/// post; a catalogue change takes the write lock for one record.
#[derive(Debug)]
pub struct Catalogue {
    table: RwLock<Table>,
    /// Bumped by every change: rankings are recomputed only when it moved.
    version: AtomicU64,
    max_apps: usize,
    /// Set once the reader has read the whole topic as it was at start-up (see
    /// [`crate::pipelines::GlobalTable::caught_up`]).
    caught_up: Arc<AtomicBool>,
}

impl Catalogue {
    /// An empty catalogue of at most `max_apps` apps, ready once `caught_up` is set.
    pub fn new(max_apps: usize, caught_up: Arc<AtomicBool>) -> Arc<Self> {
        Arc::new(Self { table: RwLock::new(Table::default()), version: AtomicU64::new(0), max_apps, caught_up })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        // A panic while holding the lock leaves a consistent table (every change is one insert or
        // removal): keep serving.
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// True once the whole catalogue as it was at start-up is loaded.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Changes so far: moves whenever an app is added, replaced or removed.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Apps in the catalogue.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// True when the catalogue is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `app`, or replaces the app with its id (its name is matched from now on; its counts
    /// stay, see [`super::store`]).
    pub fn upsert(&self, app: App) -> Result<(), Full> {
        let words = lower_words(&app.name);
        let mut guard = self.write();
        let t = &mut *guard;
        match t.by_id.get(&app.id).copied() {
            Some(slot) => {
                let entry = t.slots[slot as usize].as_mut().expect("indexed slots hold an entry");
                if entry.words != words {
                    t.matcher.remove(&entry.words, slot);
                    t.matcher.insert(&words, slot);
                }
                *entry = Entry { app: Arc::new(app), words };
            }
            None => {
                if t.by_id.len() >= self.max_apps {
                    return Err(Full(self.max_apps));
                }
                let slot = t.free.pop().unwrap_or_else(|| {
                    t.slots.push(None);
                    (t.slots.len() - 1) as Slot
                });
                t.matcher.insert(&words, slot);
                t.by_id.insert(app.id.clone(), slot);
                t.slots[slot as usize] = Some(Entry { app: Arc::new(app), words });
            }
        }
        Self::compact_index(t);
        drop(guard);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Removes the app `id`, if present.
    pub fn remove(&self, id: &str) {
        let mut guard = self.write();
        let t = &mut *guard;
        let Some(slot) = t.by_id.remove(id) else { return };
        if let Some(entry) = t.slots[slot as usize].take() {
            t.matcher.remove(&entry.words, slot);
        }
        t.free.push(slot);
        Self::compact_index(t);
        drop(guard);
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Rebuilds the word index once paths left behind by renamed and removed apps outnumber the
    /// live names' (each name has at most a few nodes): memory stays proportional to the
    /// catalogue however often it changes.
    fn compact_index(t: &mut Table) {
        if t.matcher.nodes() <= 4 * (t.matcher.len() + 1024) {
            return;
        }
        let mut m = Matcher::new();
        for (slot, entry) in t.slots.iter().enumerate() {
            if let Some(e) = entry {
                m.insert(&e.words, slot as Slot);
            }
        }
        t.matcher = m;
    }

    /// The app `id`, if present.
    pub fn get(&self, id: &str) -> Option<Arc<App>> {
        let t = self.read();
        let slot = *t.by_id.get(id)?;
        t.slots[slot as usize].as_ref().map(|e| e.app.clone())
    }

    /// True if the app `id` is in the catalogue.
    pub fn contains(&self, id: &str) -> bool {
        self.read().by_id.contains_key(id)
    }

    /// Appends to `found` the id of every app `text` mentions, each once; `slots` and `scratch`
    /// are reused buffers.
    pub fn mentioned(&self, text: &str, scratch: &mut Scratch, slots: &mut Vec<Slot>, found: &mut Vec<AppId>) {
        slots.clear();
        let t = self.read();
        t.matcher.find(text, scratch, slots);
        for &slot in slots.iter() {
            if let Some(e) = &t.slots[slot as usize] {
                found.push(e.app.id.clone());
            }
        }
    }

    /// Every app whose `prime_genre` is one of `genres`.
    pub fn in_genres(&self, genres: &[String]) -> Vec<Arc<App>> {
        let t = self.read();
        t.slots.iter().flatten().filter(|e| genres.contains(&e.app.prime_genre)).map(|e| e.app.clone()).collect()
    }
}

/// Applies `apps` records to the shared [`Catalogue`]: the global table's processor.
pub struct CatalogueProcessor {
    catalogue: Arc<Catalogue>,
    size: prometheus::IntGauge,
}

impl CatalogueProcessor {
    /// A processor writing into `catalogue`, reporting its size in `size`.
    pub fn new(catalogue: Arc<Catalogue>, size: prometheus::IntGauge) -> Self {
        Self { catalogue, size }
    }
}

/// What [`CatalogueProcessor`] applies: a change, or a record it must refuse after decoding (the
/// catalogue is full).
impl Processor for CatalogueProcessor {
    type Input<'a> = CatalogueChange<'a>;
    type Part = ();

    fn decode<'a>(&self, _topic: &'static str, rec: &'a RawRecord) -> Result<CatalogueChange<'a>, Rejection> {
        let change = decode_app(rec)?;
        if let CatalogueChange::Upsert(app) = &change {
            // Checked here, not in `process`, so the record is dead-lettered with the reason.
            if !self.catalogue.contains(&app.id) && self.catalogue.len() >= self.catalogue.max_apps {
                return Err(Rejection::new(RejectClass::TooLarge, Full(self.catalogue.max_apps).to_string()));
            }
        }
        Ok(change)
    }

    fn process(&mut self, change: CatalogueChange<'_>, _meta: &RecordMeta, _out: &mut Emit<()>) {
        match change {
            CatalogueChange::Upsert(app) => {
                if let Err(full) = self.catalogue.upsert(app) {
                    // Only one writer: `decode` checked the bound just before.
                    tracing::warn!(error = %full, "app not added");
                }
            }
            CatalogueChange::Remove(id) => self.catalogue.remove(id),
        }
        self.size.set(self.catalogue.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: Option<&str>) -> RawRecord {
        RawRecord { key: Some(key.into()), value: value.map(|v| v.as_bytes().to_vec()), offset: 0, timestamp_ms: None }
    }

    const SPOTIFY: &str = r#"{"id":"324684580","track_name":"Spotify Music","size_bytes":132510720,"currency":"USD","price":0.0,"rating_count_tot":878563,"rating_count_ver":3566,"user_rating":4.5,"user_rating_ver":4.5,"ver":"8.4.3","cont_rating":"12+","prime_genre":"Music","sup_devices.num":37,"ipadSc_urls.num":5,"lang.num":18,"vpp_lic":1}"#;

    #[test]
    fn decodes_the_records_ingest_writes_and_tombstones() {
        let CatalogueChange::Upsert(app) = decode_app(&rec("324684580", Some(SPOTIFY))).expect("valid") else {
            panic!("an upsert")
        };
        assert_eq!((app.name.as_str(), app.rating_count_tot, app.user_rating), ("Spotify Music", 878563, 4.5));
        assert_eq!(decode_app(&rec("324684580", None)), Ok(CatalogueChange::Remove("324684580")));
        let minimal = r#"{"id":"1","track_name":"Pandora - Music & Radio","prime_genre":"Music","rating_count_tot":5,"user_rating":4,"price":0}"#;
        let CatalogueChange::Upsert(app) = decode_app(&rec("1", Some(minimal))).expect("valid") else { panic!() };
        assert_eq!(app.name, "Pandora");
    }

    #[test]
    fn rejections_name_the_field() {
        let bad = |key: &str, v: &str| decode_app(&rec(key, Some(v))).expect_err("invalid");
        let base = r#""track_name":"X","prime_genre":"Music","rating_count_tot":5,"user_rating":4,"price":0"#;
        let e = bad("2", &format!(r#"{{"id":"1",{base}}}"#));
        assert_eq!(e.class, RejectClass::InvalidValue);
        assert!(e.message.contains("does not match the key"), "{e}");
        let e = bad("1", r#"{"id":"1","track_name":"X","prime_genre":"Music","user_rating":4,"price":0}"#);
        assert_eq!((e.class, e.message.as_str()), (RejectClass::MissingField, "field `rating_count_tot` is missing"));
        let e = bad("1", &format!(r#"{{"id":"1",{base},"lang.num":"many"}}"#));
        assert_eq!(e.message, "field `lang.num` must be a number, found string");
        let e = bad(
            "1",
            r#"{"id":"1","track_name":"X","prime_genre":"Music","rating_count_tot":5,"user_rating":9,"price":0}"#,
        );
        assert!(e.message.starts_with("field `user_rating` must be a number from 0 to 5"), "{e}");
        let e = bad(
            "1",
            r#"{"id":"1","track_name":"X","prime_genre":"Music","rating_count_tot":5,"user_rating":"4","price":0}"#,
        );
        assert_eq!(e.class, RejectClass::WrongType);
        let e = bad(
            "1",
            r#"{"id":"1","track_name":" ","prime_genre":"Music","rating_count_tot":5,"user_rating":4,"price":0}"#,
        );
        assert_eq!(e.message, "field `track_name` must not be blank");
        let e = decode_app(&RawRecord { key: None, ..rec("", Some(SPOTIFY)) }).expect_err("no key");
        assert_eq!(e.class, RejectClass::MissingField);
    }

    fn app(id: &str, track_name: &str, genre: &str) -> App {
        App {
            id: id.into(),
            track_name: track_name.into(),
            name: app_name(track_name).into(),
            prime_genre: genre.into(),
            rating_count_tot: 1,
            rating_count_ver: 0,
            user_rating: 4.0,
            price: 0.0,
        }
    }

    fn mentioned(c: &Catalogue, text: &str) -> Vec<String> {
        let mut found = Vec::new();
        c.mentioned(text, &mut Scratch::default(), &mut Vec::new(), &mut found);
        let mut ids: Vec<String> = found.iter().map(|s| s.to_string()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn renames_and_removals_change_what_is_matched_from_then_on() {
        let c = Catalogue::new(10, Arc::new(AtomicBool::new(true)));
        c.upsert(app("1", "Pandora - Music & Radio", "Music")).expect("room");
        c.upsert(app("2", "Kindle – Read eBooks", "Book")).expect("room");
        assert_eq!(mentioned(&c, "pandora on my kindle"), vec!["1", "2"]);
        let v = c.version();
        c.upsert(app("1", "Pandora Radio - New", "Music")).expect("a rename");
        assert!(c.version() > v);
        assert_eq!(mentioned(&c, "pandora on my kindle"), vec!["2"], "the new name is two words");
        assert_eq!(mentioned(&c, "pandora radio!"), vec!["1"]);
        c.remove("2");
        assert_eq!(mentioned(&c, "pandora on my kindle"), Vec::<String>::new());
        assert_eq!((c.len(), c.in_genres(&["Music".into()]).len()), (1, 1));
    }

    #[test]
    fn the_catalogue_is_bounded_and_its_index_stays_small_under_churn() {
        let c = Catalogue::new(2, Arc::new(AtomicBool::new(true)));
        c.upsert(app("1", "A", "Music")).expect("room");
        c.upsert(app("2", "B", "Music")).expect("room");
        assert_eq!(c.upsert(app("3", "C", "Music")), Err(Full(2)));
        c.upsert(app("2", "B2", "Music")).expect("a replacement needs no room");
        for i in 0..20_000 {
            c.upsert(app("1", &format!("name number {i}"), "Music")).expect("a rename");
        }
        assert!(c.read().matcher.nodes() < 20_000, "renames do not grow the index for ever");
        assert_eq!(mentioned(&c, "name number 19999"), vec!["1"]);
    }
}
