//! Nexmark events, generated the way the reference generator (Apache
//! Beam's Nexmark suite, as used by the Flink and RisingWave benchmarks)
//! does: out of every 50 events 1 is a person, 3 are auctions and 46 are
//! bids; event `n` happens at `base + n / rate`; ids, sellers, bidders and
//! auctions follow its "hot" and "in flight" rules; prices are
//! `round(10^(6u) * 100)`; the `extra` columns pad events to the reference
//! average sizes (person 200 B, auction 500 B, bid 100 B).
//!
//! Deterministic for a seed, so every run sees the same events.

use std::sync::Arc;

use arrow::array::{Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::SchemaRef;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const TOTAL_PROPORTION: u64 = 50;

const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: i64 = 5;

/// Ids are rounded down to a multiple of these to pick the "hot" one.
const HOT_AUCTION_RATIO: i64 = 100;
const HOT_SELLER_RATIO: i64 = 100;
const HOT_BIDDER_RATIO: i64 = 100;
/// One in this many picks is not hot (the generator's configuration).
const HOT_AUCTIONS: u32 = 2;
const HOT_SELLERS: u32 = 4;
const HOT_BIDDERS: u32 = 4;
const HOT_CHANNELS_RATIO: u32 = 2;
const CHANNELS: u32 = 10_000;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

const NUM_ACTIVE_PEOPLE: i64 = 1000;
const PERSON_ID_LEAD: i64 = 10;
const NUM_IN_FLIGHT_AUCTIONS: i64 = 100;
const AUCTION_ID_LEAD: i64 = 10;

const AVG_PERSON_BYTES: usize = 200;
const AVG_AUCTION_BYTES: usize = 500;
const AVG_BID_BYTES: usize = 100;

const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];

/// The three streams' declarations (a 4-second watermark on each).
pub const STREAMS: [&str; 3] = [
    "CREATE STREAM person (id BIGINT NOT NULL, name TEXT NOT NULL, email_address TEXT NOT NULL, \
     credit_card TEXT NOT NULL, city TEXT NOT NULL, state TEXT NOT NULL, \
     date_time TIMESTAMP NOT NULL, extra TEXT NOT NULL, \
     WATERMARK FOR date_time AS date_time - INTERVAL '4 seconds') WITH (partitions = 4)",
    "CREATE STREAM auction (id BIGINT NOT NULL, item_name TEXT NOT NULL, \
     description TEXT NOT NULL, initial_bid BIGINT NOT NULL, reserve BIGINT NOT NULL, \
     date_time TIMESTAMP NOT NULL, expires TIMESTAMP NOT NULL, seller BIGINT NOT NULL, \
     category BIGINT NOT NULL, extra TEXT NOT NULL, \
     WATERMARK FOR date_time AS date_time - INTERVAL '4 seconds') WITH (partitions = 4)",
    "CREATE STREAM bid (auction BIGINT NOT NULL, bidder BIGINT NOT NULL, price BIGINT NOT NULL, \
     channel TEXT NOT NULL, url TEXT NOT NULL, date_time TIMESTAMP NOT NULL, \
     extra TEXT NOT NULL, \
     WATERMARK FOR date_time AS date_time - INTERVAL '4 seconds') WITH (partitions = 4)",
];

/// The events of one block, one batch per stream.
pub struct Block {
    pub person: RecordBatch,
    pub auction: RecordBatch,
    pub bid: RecordBatch,
}

/// The generator: the next event number and the random state.
pub struct Generator {
    rng: SmallRng,
    next: u64,
    base_us: i64,
    delay_us: f64,
    hot_urls: Vec<String>,
    /// `(channel, url)` of the non-hot channels, made once.
    channels: Vec<(String, String)>,
    schemas: [SchemaRef; 3],
}

impl Generator {
    /// Events from number 0, `rate` per second of event time from
    /// `base_us`, into batches of the given person, auction and bid schemas.
    pub fn new(seed: u64, rate: u64, base_us: i64, schemas: [SchemaRef; 3]) -> Generator {
        let mut rng = SmallRng::seed_from_u64(seed);
        let hot_urls = (0..HOT_CHANNELS.len())
            .map(|_| base_url(&mut rng))
            .collect();
        let channels = (0..CHANNELS)
            .map(|n| {
                let mut url = base_url(&mut rng);
                if rng.random_range(0..10) > 0 {
                    url.push_str(&format!("&channel_id={}", (n as i32).reverse_bits().abs()));
                }
                (format!("channel-{n}"), url)
            })
            .collect();
        Generator {
            rng,
            next: 0,
            base_us,
            delay_us: 1e6 / rate as f64,
            hot_urls,
            channels,
            schemas,
        }
    }

    /// The next `n` events.
    pub fn block(&mut self, n: u64) -> Block {
        let mut p = PersonColumns::default();
        let mut a = AuctionColumns::default();
        let mut b = BidColumns::default();
        for id in self.next..self.next + n {
            let ts = self.base_us + (id as f64 * self.delay_us) as i64;
            let offset = id % TOTAL_PROPORTION;
            if offset < PERSON_PROPORTION {
                self.person(id, ts, &mut p);
            } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
                self.auction(id, ts, &mut a);
            } else {
                self.bid(id, ts, &mut b);
            }
        }
        self.next += n;
        Block {
            person: p.finish(&self.schemas[0]),
            auction: a.finish(&self.schemas[1]),
            bid: b.finish(&self.schemas[2]),
        }
    }

    fn person(&mut self, id: u64, ts: i64, c: &mut PersonColumns) {
        let r = &mut self.rng;
        let name = format!(
            "{} {}",
            FIRST_NAMES[r.random_range(0..FIRST_NAMES.len())],
            LAST_NAMES[r.random_range(0..LAST_NAMES.len())]
        );
        let email = format!("{}@{}.com", string(r, 7), string(r, 5));
        let card = (0..4)
            .map(|_| format!("{:04}", r.random_range(0..10_000)))
            .collect::<Vec<_>>()
            .join(" ");
        let city = US_CITIES[r.random_range(0..US_CITIES.len())];
        let state = US_STATES[r.random_range(0..US_STATES.len())];
        let size = 8 + name.len() + email.len() + card.len() + city.len() + state.len();
        let extra = extra(r, size, AVG_PERSON_BYTES);
        c.id.append_value(last_base0_person_id(id) + FIRST_PERSON_ID);
        c.name.append_value(name);
        c.email.append_value(email);
        c.card.append_value(card);
        c.city.append_value(city);
        c.state.append_value(state);
        c.date_time.append_value(ts);
        c.extra.append_value(extra);
    }

    fn auction(&mut self, id: u64, ts: i64, c: &mut AuctionColumns) {
        let r = &mut self.rng;
        let seller = if r.random_range(0..HOT_SELLERS) > 0 {
            (last_base0_person_id(id) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
        } else {
            next_base0_person_id(r, id)
        };
        let category = FIRST_CATEGORY_ID + r.random_range(0..NUM_CATEGORIES);
        let initial = price(r);
        let item = string(r, 20);
        let description = string(r, 100);
        let reserve = initial + price(r);
        let size = 8 + item.len() + description.len() + 8 + 8 + 8 + 8 + 8;
        let extra = extra(r, size, AVG_AUCTION_BYTES);
        // Auctions last long enough for the next in-flight batch of
        // auctions to start: up to twice that horizon.
        let horizon_events =
            (NUM_IN_FLIGHT_AUCTIONS as u64 * TOTAL_PROPORTION) / AUCTION_PROPORTION;
        let horizon_ms = ((horizon_events as f64 * self.delay_us) / 1000.0) as i64;
        let length_ms = 1 + r.random_range(0..(horizon_ms * 2).max(1));
        c.id.append_value(last_base0_auction_id(id) + FIRST_AUCTION_ID);
        c.item.append_value(item);
        c.description.append_value(description);
        c.initial.append_value(initial);
        c.reserve.append_value(reserve);
        c.date_time.append_value(ts);
        c.expires.append_value(ts + length_ms * 1000);
        c.seller.append_value(seller + FIRST_PERSON_ID);
        c.category.append_value(category);
        c.extra.append_value(extra);
    }

    fn bid(&mut self, id: u64, ts: i64, c: &mut BidColumns) {
        let r = &mut self.rng;
        let auction = if r.random_range(0..HOT_AUCTIONS) > 0 {
            (last_base0_auction_id(id) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
        } else {
            next_base0_auction_id(r, id)
        };
        let bidder = if r.random_range(0..HOT_BIDDERS) > 0 {
            (last_base0_person_id(id) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
        } else {
            next_base0_person_id(r, id)
        };
        let price = price(r);
        let (channel, url) = if r.random_range(0..HOT_CHANNELS_RATIO) > 0 {
            let i = r.random_range(0..HOT_CHANNELS.len());
            (HOT_CHANNELS[i], self.hot_urls[i].as_str())
        } else {
            let (ch, url) = &self.channels[r.random_range(0..self.channels.len())];
            (ch.as_str(), url.as_str())
        };
        let extra = extra(r, 8 + 8 + 8 + 8, AVG_BID_BYTES);
        c.auction.append_value(auction + FIRST_AUCTION_ID);
        c.bidder.append_value(bidder + FIRST_PERSON_ID);
        c.price.append_value(price);
        c.channel.append_value(channel);
        c.url.append_value(url);
        c.date_time.append_value(ts);
        c.extra.append_value(extra);
    }
}

/// The id (from 0) of the last person created at or before event `id`.
fn last_base0_person_id(id: u64) -> i64 {
    // One person per epoch of 50 events, its first event.
    const _: () = assert!(PERSON_PROPORTION == 1);
    (id / TOTAL_PROPORTION) as i64
}

/// The id (from 0) of the last auction created at or before event `id`.
fn last_base0_auction_id(id: u64) -> i64 {
    let mut epoch = (id / TOTAL_PROPORTION) as i64;
    let mut offset = (id % TOTAL_PROPORTION) as i64;
    let (p, a) = (PERSON_PROPORTION as i64, AUCTION_PROPORTION as i64);
    if offset < p {
        // A person: the last auction is the previous epoch's last.
        epoch -= 1;
        offset = a - 1;
    } else if offset >= p + a {
        // A bid: this epoch's last auction.
        offset = a - 1;
    } else {
        offset -= p;
    }
    epoch * a + offset
}

/// A person among the active ones (or a few not created yet).
fn next_base0_person_id(r: &mut SmallRng, id: u64) -> i64 {
    let people = last_base0_person_id(id) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + r.random_range(0..active + PERSON_ID_LEAD)
}

/// An auction among those in flight (or a few not created yet).
fn next_base0_auction_id(r: &mut SmallRng, id: u64) -> i64 {
    let max = last_base0_auction_id(id).max(0);
    let min = (max - NUM_IN_FLIGHT_AUCTIONS).max(0);
    min + r.random_range(0..max - min + 1 + AUCTION_ID_LEAD)
}

fn price(r: &mut SmallRng) -> i64 {
    (10f64.powf(r.random::<f64>() * 6.0) * 100.0).round() as i64
}

/// Lowercase letters and the odd space, 3 to `max` long.
fn string(r: &mut SmallRng, max: usize) -> String {
    let len = 3 + r.random_range(0..max - 3);
    (0..len)
        .map(|_| {
            if r.random_range(0..13) == 0 {
                ' '
            } else {
                (b'a' + r.random_range(0..26u8)) as char
            }
        })
        .collect()
}

/// Padding that brings an event of `size` bytes to `average` (±20 %).
fn extra(r: &mut SmallRng, size: usize, average: usize) -> String {
    if size > average {
        return String::new();
    }
    let want = average - size;
    let delta = (want as f64 * 0.2).round() as usize;
    let len = want - delta + r.random_range(0..=2 * delta);
    (0..len)
        .map(|_| (b'a' + r.random_range(0..26u8)) as char)
        .collect()
}

fn base_url(r: &mut SmallRng) -> String {
    format!(
        "https://www.nexmark.com/{}/{}/{}/item.htm?query=1",
        string(r, 5).replace(' ', "_"),
        string(r, 5).replace(' ', "_"),
        string(r, 5).replace(' ', "_")
    )
}

#[derive(Default)]
struct PersonColumns {
    id: Int64Builder,
    name: StringBuilder,
    email: StringBuilder,
    card: StringBuilder,
    city: StringBuilder,
    state: StringBuilder,
    date_time: TimestampMicrosecondBuilder,
    extra: StringBuilder,
}

impl PersonColumns {
    fn finish(mut self, schema: &SchemaRef) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(self.id.finish()),
                Arc::new(self.name.finish()),
                Arc::new(self.email.finish()),
                Arc::new(self.card.finish()),
                Arc::new(self.city.finish()),
                Arc::new(self.state.finish()),
                Arc::new(self.date_time.finish()),
                Arc::new(self.extra.finish()),
            ],
        )
        .expect("person batch")
    }
}

#[derive(Default)]
struct AuctionColumns {
    id: Int64Builder,
    item: StringBuilder,
    description: StringBuilder,
    initial: Int64Builder,
    reserve: Int64Builder,
    date_time: TimestampMicrosecondBuilder,
    expires: TimestampMicrosecondBuilder,
    seller: Int64Builder,
    category: Int64Builder,
    extra: StringBuilder,
}

impl AuctionColumns {
    fn finish(mut self, schema: &SchemaRef) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(self.id.finish()),
                Arc::new(self.item.finish()),
                Arc::new(self.description.finish()),
                Arc::new(self.initial.finish()),
                Arc::new(self.reserve.finish()),
                Arc::new(self.date_time.finish()),
                Arc::new(self.expires.finish()),
                Arc::new(self.seller.finish()),
                Arc::new(self.category.finish()),
                Arc::new(self.extra.finish()),
            ],
        )
        .expect("auction batch")
    }
}

#[derive(Default)]
struct BidColumns {
    auction: Int64Builder,
    bidder: Int64Builder,
    price: Int64Builder,
    channel: StringBuilder,
    url: StringBuilder,
    date_time: TimestampMicrosecondBuilder,
    extra: StringBuilder,
}

impl BidColumns {
    fn finish(mut self, schema: &SchemaRef) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(self.auction.finish()),
                Arc::new(self.bidder.finish()),
                Arc::new(self.price.finish()),
                Arc::new(self.channel.finish()),
                Arc::new(self.url.finish()),
                Arc::new(self.date_time.finish()),
                Arc::new(self.extra.finish()),
            ],
        )
        .expect("bid batch")
    }
}
