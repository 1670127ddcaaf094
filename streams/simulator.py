"""Seeded simulator of a catalog and its shoppers, with known preferences.

Items belong to a two-level category tree (6 top-level categories with 3
subcategories each), carry a brand of their top-level category, attributes and a
price. Some are warm (a multi-sentence description and reviews), the rest cold
(no or a one-line description, no reviews), and a share are Chinese listings.
Every shopper prefers one or two top-level categories and one brand. Behaviour
events mostly follow those preferences, so a recommender can be scored against
the ground truth with :meth:`Simulator.hit_rate`.

The same arguments always give the same events, whatever the call order.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass
from typing import Mapping, Iterable

PRODUCT_CREATED = "product-created"
USER_BEHAVIOUR = "user-behaviour"
DAY_MS = 24 * 3600 * 1000

# top-level category -> subcategory -> product nouns as (English, Chinese)
TAXONOMY: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "Electronics": {
        "Headphones": (("wireless headphones", "无线耳机"), ("earbuds", "蓝牙耳塞"), ("studio headphones", "头戴式耳机")),
        "Phone Accessories": (("phone case", "手机壳"), ("charging cable", "充电线"), ("power bank", "充电宝")),
        "Smart Home": (("smart plug", "智能插座"), ("LED bulb", "LED灯泡"), ("security camera", "监控摄像头")),
    },
    "Home & Kitchen": {
        "Cookware": (("frying pan", "煎锅"), ("saucepan", "汤锅"), ("dutch oven", "铸铁锅")),
        "Bedding": (("duvet cover", "被套"), ("pillow", "枕头"), ("fitted sheet", "床笠")),
        "Storage": (("storage box", "收纳盒"), ("shelf organizer", "置物架"), ("laundry basket", "洗衣篮")),
    },
    "Clothing": {
        "Jackets": (("rain jacket", "冲锋衣"), ("down jacket", "羽绒服"), ("denim jacket", "牛仔夹克")),
        "Sneakers": (("running shoes", "跑步鞋"), ("canvas sneakers", "帆布鞋"), ("trail shoes", "越野跑鞋")),
        "T-Shirts": (("crew-neck t-shirt", "圆领T恤"), ("polo shirt", "Polo衫"), ("graphic tee", "印花T恤")),
    },
    "Sports & Outdoors": {
        "Camping": (("tent", "帐篷"), ("sleeping bag", "睡袋"), ("camping lantern", "露营灯")),
        "Fitness": (("yoga mat", "瑜伽垫"), ("dumbbell set", "哑铃套装"), ("resistance bands", "弹力带")),
        "Cycling": (("bike helmet", "自行车头盔"), ("bike light", "自行车灯"), ("cycling gloves", "骑行手套")),
    },
    "Beauty": {
        "Skincare": (("face moisturizer", "面霜"), ("sunscreen", "防晒霜"), ("cleanser", "洁面乳")),
        "Haircare": (("shampoo", "洗发水"), ("hair dryer", "吹风机"), ("hair oil", "护发精油")),
        "Fragrance": (("eau de parfum", "香水"), ("body mist", "身体喷雾"), ("scented candle", "香薰蜡烛")),
    },
    "Toys & Games": {
        "Board Games": (("strategy board game", "策略桌游"), ("party game", "聚会桌游"), ("chess set", "国际象棋")),
        "Puzzles": (("jigsaw puzzle", "拼图"), ("3D puzzle", "立体拼图"), ("puzzle cube", "魔方")),
        "Building Sets": (("building blocks", "积木"), ("robot kit", "机器人套件"), ("marble run", "弹珠轨道")),
    },
}
BRANDS: dict[str, tuple[str, ...]] = {
    "Electronics": ("Voltix", "Sonara", "Kestrel Audio", "Lumio"),
    "Home & Kitchen": ("Hearthly", "Copperleaf", "Nestwell", "Oakmere"),
    "Clothing": ("Northtrail", "Urban Loom", "Fernwood", "Mistral"),
    "Sports & Outdoors": ("Summitline", "Pacefit", "Ridgeback", "Tideway"),
    "Beauty": ("Aurelle", "Maris & Co", "Veloura", "Botanika"),
    "Toys & Games": ("Brickwise", "Puzzlecraft", "Tumbletop", "Kiddo Labs"),
}
COLORS = (("black", "黑色"), ("white", "白色"), ("navy", "藏青色"), ("red", "红色"),
          ("green", "绿色"), ("grey", "灰色"))
# top-level category -> (extra attribute name, its values), values as (English, Chinese)
EXTRA_ATTRIBUTES: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "Electronics": ("warranty", (("1 year", "1年"), ("2 years", "2年"))),
    "Home & Kitchen": ("size", (("small", "小号"), ("medium", "中号"), ("large", "大号"))),
    "Clothing": ("size", (("S", "S"), ("M", "M"), ("L", "L"), ("XL", "XL"))),
    "Sports & Outdoors": ("weight", (("0.5 kg", "0.5千克"), ("1.2 kg", "1.2千克"), ("2 kg", "2千克"))),
    "Beauty": ("volume", (("50 ml", "50毫升"), ("100 ml", "100毫升"), ("200 ml", "200毫升"))),
    "Toys & Games": ("age", (("3+", "3岁以上"), ("6+", "6岁以上"), ("8+", "8岁以上"), ("12+", "12岁以上"))),
}
_STEEL, _COTTON = ("stainless steel", "不锈钢"), ("cotton", "纯棉")
_PLASTIC, _NYLON = ("plastic", "塑料"), ("nylon", "尼龙")
MATERIALS: dict[str, tuple[tuple[str, str], ...]] = {
    "Headphones": (("aluminium", "铝合金"), _PLASTIC),
    "Phone Accessories": (("silicone", "硅胶"), _PLASTIC, ("braided nylon", "编织尼龙")),
    "Smart Home": (_PLASTIC, ("aluminium", "铝合金")),
    "Cookware": (_STEEL, ("cast iron", "铸铁"), ("hard-anodised aluminium", "硬质氧化铝")),
    "Bedding": (_COTTON, ("linen", "亚麻"), ("microfibre", "超细纤维")),
    "Storage": (("bamboo", "竹"), _PLASTIC, ("woven seagrass", "海草编织")),
    "Jackets": (_NYLON, ("polyester", "涤纶"), ("denim", "牛仔布")),
    "Sneakers": (("canvas", "帆布"), ("mesh", "网面"), ("leather", "皮革")),
    "T-Shirts": (_COTTON, ("organic cotton", "有机棉"), ("cotton blend", "混纺棉")),
    "Camping": (_NYLON, ("ripstop polyester", "防撕裂涤纶")),
    "Fitness": (("rubber", "橡胶"), ("TPE foam", "TPE泡沫"), _STEEL),
    "Cycling": (("polycarbonate", "聚碳酸酯"), _NYLON),
    "Skincare": (("glass", "玻璃"), ("recycled plastic", "再生塑料")),
    "Haircare": (("recycled plastic", "再生塑料"), _PLASTIC),
    "Fragrance": (("glass", "玻璃"), ("soy wax", "大豆蜡")),
    "Board Games": (("wood", "木质"), ("cardboard", "纸板")),
    "Puzzles": (("cardboard", "纸板"), ("wood", "木质"), _PLASTIC),
    "Building Sets": (_PLASTIC, ("wood", "木质")),
}
PRICE_RANGE_USD = {"Electronics": (15, 250), "Home & Kitchen": (10, 150), "Clothing": (12, 180),
                   "Sports & Outdoors": (8, 300), "Beauty": (6, 90), "Toys & Games": (10, 120)}
USD_TO_CNY = 7.2
USES = {"Electronics": "work, travel and home", "Home & Kitchen": "a busy household",
        "Clothing": "everyday wear", "Sports & Outdoors": "weekends outside",
        "Beauty": "a daily routine", "Toys & Games": "family evenings"}
ADJECTIVES = (("Classic", "经典款"), ("Compact", "便携"), ("Premium", "高端"), ("Everyday", "日常"),
              ("Lightweight", "轻量"), ("Pro", "专业"), ("Essential", "基础款"))
EXTRA_SENTENCES = {"warranty": "It is covered by a {extra} warranty.",
                   "size": "This listing is for size {extra}.", "weight": "It weighs about {extra}.",
                   "volume": "Each bottle holds {extra}.",
                   "age": "The maker recommends it for ages {extra}."}
# Event-type mix for picks that follow a shopper's preferences, and for noise picks.
PREFERRED_MIX = {"view": 0.55, "click": 0.20, "favourite": 0.08, "cart": 0.10, "purchase": 0.07}
NOISE_MIX = {"view": 0.75, "click": 0.20, "favourite": 0.03, "cart": 0.015, "purchase": 0.005}


@dataclass(frozen=True)
class ShopperProfile:
    """Ground truth of one simulated shopper."""

    categories: tuple[str, ...]  # preferred top-level categories
    brand: str  # preferred brand, a brand of the first preferred category


class _Pool:
    """Items sorted by creation time with cumulative popularity, for time-aware draws."""

    def __init__(self, items: list[dict], popularity: dict[str, float]) -> None:
        ordered = sorted(items, key=lambda item: item["created_at_ms"])
        self.item_ids = [item["item_id"] for item in ordered]
        self.created_ms = [item["created_at_ms"] for item in ordered]
        self.cumulative = list(itertools.accumulate(popularity[i] for i in self.item_ids))

    def draw(self, rng: random.Random, before_ms: int) -> str | None:
        """Draw an item created strictly before ``before_ms``, weighted by popularity."""
        available = bisect.bisect_left(self.created_ms, before_ms)
        if available == 0:
            return None
        target = rng.random() * self.cumulative[available - 1]
        return self.item_ids[min(bisect.bisect_right(self.cumulative, target), available - 1)]


class Simulator:
    """Deterministic catalog and shopper simulator.

    Parameters
    ----------
    seed
        Seed of every random draw.
    n_items, n_users
        Catalog and shopper counts.
    cold_share
        Share of items without a real description and reviews.
    zh_share
        Share of Chinese listings (``language="zh"``, prices in CNY).
    start_ms
        Start of the behaviour window, epoch milliseconds.
    duration_ms
        Length of the behaviour window.
    initial_item_share
        Share of items created before ``start_ms``; the rest appear during the window.
    noise
        Probability that a behaviour event ignores the shopper's preferences.
    brand_share
        Probability that a preference-following event picks the preferred brand.
    """

    def __init__(self, *, seed: int = 0, n_items: int = 200, n_users: int = 100,
                 cold_share: float = 0.5, zh_share: float = 0.1,
                 start_ms: int = 1_700_000_000_000, duration_ms: int = 7 * DAY_MS,
                 initial_item_share: float = 0.6, noise: float = 0.1,
                 brand_share: float = 0.3) -> None:
        for name, share in (("cold_share", cold_share), ("zh_share", zh_share),
                            ("initial_item_share", initial_item_share), ("noise", noise),
                            ("brand_share", brand_share)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {share!r}")
        if n_items < 1 or n_users < 1:
            raise ValueError(f"n_items and n_users must be >= 1, got {n_items} and {n_users}")
        if duration_ms <= 0:
            raise ValueError(f"duration_ms must be > 0, got {duration_ms}")
        self.seed = seed
        self.start_ms = start_ms
        self.duration_ms = duration_ms
        self.noise = noise
        self.brand_share = brand_share
        self._items = self._make_items(n_items, cold_share, zh_share, initial_item_share)
        self._by_id = {item["item_id"]: item for item in self._items}
        self._top_category = {item_id: item["category"][0] for item_id, item in self._by_id.items()}
        self.ground_truth: dict[str, ShopperProfile] = {}
        self._activity: list[float] = []
        self._make_users(n_users)

        popularity = {item["item_id"]: 1.0 + math.log1p(item["review_count"]) for item in self._items}
        self._all = _Pool(self._items, popularity)
        self._by_category = {top: _Pool([i for i in self._items if i["category"][0] == top], popularity)
                             for top in TAXONOMY}
        self._by_brand = {brand: _Pool([i for i in self._items if i["brand"] == brand], popularity)
                          for brand in itertools.chain.from_iterable(BRANDS.values())}

    def _rng(self, purpose: str) -> random.Random:
        return random.Random(f"shopsynth-simulator:{self.seed}:{purpose}")

    def _make_items(self, n_items: int, cold_share: float, zh_share: float,
                    initial_item_share: float) -> list[dict]:
        rng = self._rng("catalog")
        indices = list(range(n_items))
        cold = set(rng.sample(indices, round(cold_share * n_items)))
        chinese = set(rng.sample(indices, round(zh_share * n_items)))
        # At least one item exists before the window, so every behaviour event finds an item.
        initial = max(1, round(initial_item_share * n_items))
        late = set(rng.sample(indices, n_items - initial))
        items = []
        for index in indices:
            if index in late:  # appears during the window, before its last tenth
                created_ms = self.start_ms + 1 + int(rng.random() * 0.9 * self.duration_ms)
            else:
                created_ms = self.start_ms - 1 - int(rng.random() * 30 * DAY_MS)
            items.append(_make_item(rng, index=index, seed=self.seed, cold=index in cold,
                                    zh=index in chinese, created_ms=created_ms))
        return sorted(items, key=lambda item: (item["created_at_ms"], item["item_id"]))

    def _make_users(self, n_users: int) -> None:
        rng = self._rng("users")
        tops = list(TAXONOMY)
        for index in range(n_users):
            categories = tuple(rng.sample(tops, rng.choice((1, 2))))
            brand = rng.choice(BRANDS[categories[0]])
            self.ground_truth[f"user-{index:04d}"] = ShopperProfile(categories, brand)
            self._activity.append(rng.lognormvariate(0.0, 0.75))

    def products(self) -> list[dict]:
        """Return every product-created event, ordered by ``created_at_ms``."""
        return [dict(item, category=list(item["category"]), attributes=dict(item["attributes"]))
                for item in self._items]

    def behaviour(self, n_events: int) -> list[dict]:
        """Return ``n_events`` user-behaviour events in timestamp order.

        Each event's item was created strictly before the event's timestamp.
        """
        if n_events < 0:
            raise ValueError(f"n_events must be >= 0, got {n_events}")
        rng = self._rng("behaviour")
        users = list(self.ground_truth)
        user_cumulative = list(itertools.accumulate(self._activity))
        timestamps = sorted(self.start_ms + int(rng.random() * self.duration_ms)
                            for _ in range(n_events))
        events = []
        for index, timestamp_ms in enumerate(timestamps):
            user_id = rng.choices(users, cum_weights=user_cumulative)[0]
            profile = self.ground_truth[user_id]
            draw = rng.random()
            noisy = draw < self.noise
            if noisy:
                item_id = None
            elif draw < self.noise + self.brand_share * (1.0 - self.noise):
                item_id = self._by_brand[profile.brand].draw(rng, timestamp_ms)
            else:
                category = rng.choice(profile.categories)
                item_id = self._by_category[category].draw(rng, timestamp_ms)
            if item_id is None:  # noise, or nothing of the preferred kind exists yet
                item_id = self._all.draw(rng, timestamp_ms)
                noisy = True
            mix = NOISE_MIX if noisy else PREFERRED_MIX
            event_type = rng.choices(list(mix), weights=list(mix.values()))[0]
            events.append({
                "event_id": f"sim{self.seed}-b{index:08d}",
                "user_id": user_id,
                "item_id": item_id,
                "event_type": event_type,
                "timestamp_ms": timestamp_ms,
                "weight": None,
                "category": "/".join(self._by_id[item_id]["category"]),
            })
        return events

    def events(self, n_events: int) -> list[tuple[str, str, dict]]:
        """Return ``(topic, key, event)`` for all products and ``n_events`` behaviour events.

        Topics are the logical names ``product-created`` (key ``item_id``) and
        ``user-behaviour`` (key ``user_id``), interleaved in event-time order
        with products first on equal timestamps.
        """
        tagged = [(p["created_at_ms"], 0, PRODUCT_CREATED, p["item_id"], p) for p in self.products()]
        tagged += [(b["timestamp_ms"], 1, USER_BEHAVIOUR, b["user_id"], b)
                   for b in self.behaviour(n_events)]
        tagged.sort(key=lambda row: (row[0], row[1]))  # stable: keeps each topic's order
        return [(topic, key, event) for _, _, topic, key, event in tagged]

    def top_category(self, item_id: str) -> str:
        """Return the top-level category of a simulated item."""
        try:
            return self._top_category[item_id]
        except KeyError:
            raise ValueError(f"item_id {item_id!r} is not in the simulated catalog") from None

    def hit_rate(self, recommendations: dict[str, list[str]]) -> float:
        """Return the share of recommended items that fall in the user's preferred categories.

        The share is pooled over all (user, item) pairs.

        Raises
        ------
        ValueError
            For an unknown user or item, or when no item is recommended at all.
        """
        hits = total = 0
        for user_id, item_ids in recommendations.items():
            if user_id not in self.ground_truth:
                raise ValueError(f"user_id {user_id!r} is not a simulated shopper")
            preferred = self.ground_truth[user_id].categories
            for item_id in item_ids:
                hits += self.top_category(item_id) in preferred
                total += 1
        if total == 0:
            raise ValueError("recommendations contain no items; pass at least one user with items")
        return hits / total

    def random_hit_rate(self, k: int = 10, *, users: Iterable[str] | None = None,
                        exclude: Mapping[str, set[str]] | None = None) -> float:
        """Return the expected :meth:`hit_rate` of ``k`` uniformly random items per user.

        The value is exact, not sampled: for k distinct random items it is the
        mean over users of the share of candidate items in their preferred
        categories, which does not depend on ``k``. ``users`` defaults to every
        shopper. ``exclude`` maps a user to items that are not candidates for
        them (for example items they already bought), so that the baseline
        matches a recommender that skips those items.
        """
        if not 1 <= k <= len(self._items):
            raise ValueError(f"k must be in [1, {len(self._items)}], got {k}")
        user_ids = list(self.ground_truth if users is None else users)
        if not user_ids:
            raise ValueError("users is empty; pass at least one user_id")
        exclude = exclude or {}
        shares = []
        for user_id in user_ids:
            if user_id not in self.ground_truth:
                raise ValueError(f"user_id {user_id!r} is not a simulated shopper")
            preferred = self.ground_truth[user_id].categories
            excluded = exclude.get(user_id, set())
            candidates = [top for item_id, top in self._top_category.items() if item_id not in excluded]
            if not candidates:
                continue
            shares.append(sum(top in preferred for top in candidates) / len(candidates))
        if not shares:
            raise ValueError("every item is excluded for every user; nothing left to recommend")
        return sum(shares) / len(shares)


def _make_item(rng: random.Random, *, index: int, seed: int, cold: bool, zh: bool,
               created_ms: int) -> dict:
    top = rng.choice(list(TAXONOMY))
    sub = rng.choice(list(TAXONOMY[top]))
    noun_en, noun_zh = rng.choice(TAXONOMY[top][sub])
    brand = rng.choice(BRANDS[top])
    adjective_en, adjective_zh = rng.choice(ADJECTIVES)
    color = rng.choice(COLORS)
    extra_name, extra_values = EXTRA_ATTRIBUTES[top]
    material = rng.choice(MATERIALS[sub])
    extra = rng.choice(extra_values)
    low, high = PRICE_RANGE_USD[top]
    price_usd = math.floor(math.exp(rng.uniform(math.log(low), math.log(high)))) + 0.99
    lang = 1 if zh else 0
    attributes = {"color": color[lang], "material": material[lang], extra_name: extra[lang]}
    if zh:
        title = f"{brand} {adjective_zh}{noun_zh} {color[1]}"
    else:
        title = f"{brand} {adjective_en} {_capitalize_words(noun_en)} ({color[0].capitalize()})"
    if cold:
        one_line = f"{brand}{noun_zh}。" if zh else f"{_capitalize_words(noun_en)} by {brand}."
        description = one_line if rng.random() < 0.4 else None
        review_count = 0
    else:
        words = dict(brand=brand, noun=noun_en, adjective=adjective_en.lower(), use=USES[top],
                     color=color[0], material=material[0], extra_name=extra_name, extra=extra[0],
                     sub=sub.lower())
        description = (_describe_zh(rng, brand, noun_zh, adjective_zh, color[1], material[1], extra[1])
                       if zh else _describe_en(rng, words))
        review_count = int(math.exp(rng.uniform(math.log(5), math.log(300))))
    return {
        "event_id": f"sim{seed}-p{index:06d}",
        "item_id": f"sku-{index:05d}",
        "title": title,
        "brand": brand,
        "category": [top, sub],
        "attributes": attributes,
        "price": round(price_usd * USD_TO_CNY) + 0.0 if zh else price_usd,
        "currency": "CNY" if zh else "USD",
        "description": description,
        "review_count": review_count,
        "language": "zh" if zh else "en",
        "created_at_ms": created_ms,
    }


def _describe_en(rng: random.Random, words: dict[str, str]) -> str:
    """Build three to five sentences from the item's attributes, in varied wording and order."""
    openers = ("{brand}'s {noun} is made for {use}.",
               "Meet the {adjective} {noun} from {brand}, made for {use}.",
               "This {noun} from {brand} keeps things simple and suits {use}.")
    materials = ("It is made of {material} and holds up well to daily use.",
                 "The {material} build feels solid without adding bulk.",
                 "{brand} chose {material} for a long-lasting finish.")
    colors = ("It comes in {color}.", "The {color} finish is easy to match.",
              "This one is the {color} version.")
    closers = ("A good choice as a gift or for yourself.",
               "Care instructions are printed on the packaging.",
               "Buyers often pair it with other {sub} items from the same brand.")
    body = [rng.choice(materials), rng.choice(colors), EXTRA_SENTENCES[words["extra_name"]]]
    rng.shuffle(body)
    sentences = [rng.choice(openers), *body]
    if rng.random() < 0.7:
        sentences.append(rng.choice(closers))
    return " ".join(sentence.format(**words) for sentence in sentences)


def _describe_zh(rng: random.Random, brand: str, noun: str, adjective: str, color: str,
                 material: str, extra: str) -> str:
    sentences = [
        rng.choice((f"{brand}{adjective}{noun}，设计简洁，适合日常使用。",
                    f"这款{brand}{noun}主打{adjective}风格，做工扎实，细节用心。")),
        rng.choice((f"采用{material}材质，经久耐用，手感舒适。", f"{material}材质，轻便结实，清洁方便。")),
        rng.choice((f"颜色为{color}，百搭耐看，规格：{extra}。", f"本款为{color}，规格{extra}，请按需选择。")),
        rng.choice(("送礼自用两相宜，售后有保障。", "下单前请确认规格，如有疑问欢迎咨询客服。")),
    ]
    return "".join(sentences)


def _capitalize_words(text: str) -> str:
    return " ".join(word[:1].upper() + word[1:] for word in text.split())
