// vmmctl diff A B: what changed from snapshot A to snapshot B (files or
// PIDs): per device the totals and counters that moved, the regions added,
// removed or changed (matched by id), the live blocks added and removed
// (matched by address and size), and the events B recorded after A was
// taken.
#include <map>
#include <set>
#include <string>
#include <tuple>

#include "tools/vmmctl/commands.hpp"
#include "tools/vmmctl/exit_codes.hpp"
#include "tools/vmmctl/text.hpp"

namespace vmmctl {

namespace {

constexpr const char* kTotals[] = {"in_use_bytes",  "mapped_bytes",   "cached_bytes",
                                   "pending_bytes", "physical_bytes", "reserved_va_bytes",
                                   "workspaces",    "heap_segments"};
constexpr const char* kRegionFields[] = {"capacity", "size", "mapped_bytes", "in_use_bytes"};

std::int64_t as_signed(const Json& v) {
  return v.is_number() ? static_cast<std::int64_t>(v.get<std::uint64_t>()) : 0;
}

Json change(const Json& a, const Json& b) {
  return Json{{"a", a}, {"b", b}, {"delta", as_signed(b) - as_signed(a)}};
}

bool is_bytes(const std::string& name) { return name.find("bytes") != std::string::npos; }

std::string value_text(const std::string& name, std::int64_t v) {
  return is_bytes(name) ? bytes_text(static_cast<std::uint64_t>(v)) : std::to_string(v);
}

std::string delta_text(const std::string& name, std::int64_t d) {
  if (is_bytes(name)) return signed_bytes_text(d);
  return (d > 0 ? "+" : "") + std::to_string(d);
}

// Devices keyed by (device ordinal, occurrence): a process may hold two
// contexts of one device (tests, embedders).
std::map<std::pair<int, int>, const Json*> devices_of(const Json& doc) {
  std::map<std::pair<int, int>, const Json*> out;
  std::map<int, int> seen;
  for (const Json& d : doc["devices"]) {
    const int dev = d["device"];
    out[{dev, seen[dev]++}] = &d;
  }
  return out;
}

using BlockKey = std::pair<std::uint64_t, std::uint64_t>;  // address, size

std::set<BlockKey> live_blocks(const Json& d) {
  std::set<BlockKey> out;
  if (!d.contains("regions")) return out;
  for (const Json& r : d["regions"]) {
    if (r["owner"] != "heap") continue;
    for (const Json& b : r["blocks"]) {
      if (b["state"] == "live") {
        out.insert(BlockKey{b["addr"].get<std::uint64_t>(), b["size"].get<std::uint64_t>()});
      }
    }
  }
  return out;
}

std::string region_text(const Json& r) {
  const std::string name = r["name"];
  return r["id"].get<std::string>() + (name.empty() ? "" : " \"" + name + "\"") + " at " +
         hex(r["base"]) + ", " + bytes_text(r["capacity"]);
}

Json diff_device(const Json& a, const Json& b, std::string& out) {
  Json j = Json::object();
  j["device"] = b["device"];
  Json totals = Json::object();
  for (const char* k : kTotals) {
    const Json c = change(a["totals"][k], b["totals"][k]);
    totals[k] = c;
    if (c["delta"] != 0) {
      out += "  " + std::string(k) + ": " + value_text(k, c["a"]) + " -> " + value_text(k, c["b"]) +
             " (" + delta_text(k, c["delta"]) + ")\n";
    }
  }
  j["totals"] = std::move(totals);

  Json counters = Json::object();
  std::set<std::string> names;
  for (const Json* d : {&a, &b}) {
    if ((*d)["counters"].is_object()) {
      for (auto it = (*d)["counters"].begin(); it != (*d)["counters"].end(); ++it)
        names.insert(it.key());
    }
  }
  for (const std::string& n : names) {
    const Json va =
        a["counters"].is_object() && a["counters"].contains(n) ? a["counters"][n] : Json(0);
    const Json vb =
        b["counters"].is_object() && b["counters"].contains(n) ? b["counters"][n] : Json(0);
    if (va == vb) continue;
    counters[n] = change(va, vb);
    out += "  " + n + ": " + value_text(n, as_signed(va)) + " -> " + value_text(n, as_signed(vb)) +
           " (" + delta_text(n, as_signed(vb) - as_signed(va)) + ")\n";
  }
  j["counters"] = std::move(counters);

  if (a.contains("regions") && b.contains("regions")) {
    std::map<std::string, const Json*> ra, rb;
    for (const Json& r : a["regions"]) ra[r["id"]] = &r;
    for (const Json& r : b["regions"]) rb[r["id"]] = &r;
    Json added = Json::array(), removed = Json::array(), changed = Json::array();
    for (const auto& [id, r] : rb) {
      if (ra.count(id) == 0) {
        added.push_back(id);
        out += "  + region " + region_text(*r) + "\n";
      }
    }
    for (const auto& [id, r] : ra) {
      if (rb.count(id) == 0) {
        removed.push_back(id);
        out += "  - region " + region_text(*r) + "\n";
      }
    }
    for (const auto& [id, r] : rb) {
      auto it = ra.find(id);
      if (it == ra.end()) continue;
      Json fields = Json::object();
      std::string line;
      for (const char* f : kRegionFields) {
        const Json va = it->second->contains(f) ? (*it->second)[f] : Json(nullptr);
        const Json vb = r->contains(f) ? (*r)[f] : Json(nullptr);
        if (va == vb) continue;
        fields[f] = change(va, vb);
        line += std::string(line.empty() ? "" : ", ") + f + " " +
                bytes_text(static_cast<std::uint64_t>(as_signed(va))) + " -> " +
                bytes_text(static_cast<std::uint64_t>(as_signed(vb)));
      }
      for (const char* list : {"chunks", "blocks"}) {
        if (!r->contains(list) || !it->second->contains(list)) continue;
        const std::size_t na = (*it->second)[list].size(), nb = (*r)[list].size();
        if (na == nb) continue;
        fields[std::string(list)] = change(na, nb);
        line += std::string(line.empty() ? "" : ", ") + list + " " + std::to_string(na) + " -> " +
                std::to_string(nb);
      }
      const std::string na = (*it->second)["name"], nb = (*r)["name"];
      if (na != nb) {
        fields["name"] = Json{{"a", na}, {"b", nb}};
        line += std::string(line.empty() ? "" : ", ") + "name \"" + na + "\" -> \"" + nb + "\"";
      }
      if (fields.empty()) continue;
      changed.push_back(Json{{"id", id}, {"fields", std::move(fields)}});
      out += "  ~ region " + id + ": " + line + "\n";
    }
    j["regions"] = Json{{"added", std::move(added)},
                        {"removed", std::move(removed)},
                        {"changed", std::move(changed)}};

    const std::set<BlockKey> ba = live_blocks(a), bb = live_blocks(b);
    std::uint64_t added_n = 0, added_bytes = 0, removed_n = 0, removed_bytes = 0;
    for (const BlockKey& k : bb) {
      if (ba.count(k) == 0) {
        ++added_n;
        added_bytes += k.second;
      }
    }
    for (const BlockKey& k : ba) {
      if (bb.count(k) == 0) {
        ++removed_n;
        removed_bytes += k.second;
      }
    }
    j["live_blocks"] = Json{{"added", added_n},
                            {"added_bytes", added_bytes},
                            {"removed", removed_n},
                            {"removed_bytes", removed_bytes}};
    if (added_n != 0 || removed_n != 0) {
      out += "  live blocks: " + std::to_string(added_n) + " added (" + bytes_text(added_bytes) +
             "), " + std::to_string(removed_n) + " removed (" + bytes_text(removed_bytes) + ")\n";
    }
  }
  return j;
}

}  // namespace

int cmd_diff(const Options& o) {
  const Snapshot a = load_snapshot(o.args.at(0), o.source, "snapshot");
  const Snapshot b = load_snapshot(o.args.at(1), o.source, "snapshot");
  const std::uint64_t ta = a.doc["time_unix_ns"], tb = b.doc["time_unix_ns"];
  char secs[64];
  std::snprintf(secs, sizeof secs, "%+.3f s",
                (static_cast<double>(tb) - static_cast<double>(ta)) / 1e9);
  auto who = [](const Snapshot& s) {
    const std::string pid = "pid " + std::to_string(s.doc["process"]["pid"].get<long>());
    return s.origin == pid ? pid : s.origin + ", " + pid;
  };
  std::string out =
      "A: " + who(a) + " at " + time_text(ta) + " (" + a.doc["reason"].get<std::string>() + ")\n";
  out += "B: " + who(b) + " at " + time_text(tb) + " (" + b.doc["reason"].get<std::string>() +
         "), " + secs + "\n";
  if (a.doc["process"]["pid"] != b.doc["process"]["pid"]) out += "(different processes)\n";

  Json jdevices = Json::array();
  const auto da = devices_of(a.doc), db = devices_of(b.doc);
  std::set<std::pair<int, int>> keys;
  for (const auto& [k, d] : da) keys.insert(k);
  for (const auto& [k, d] : db) keys.insert(k);
  const std::size_t header = out.size();
  for (const auto& k : keys) {
    auto ia = da.find(k), ib = db.find(k);
    const std::string title =
        "device " + std::to_string(k.first) +
        (k.second != 0 ? " (context " + std::to_string(k.second + 1) + ")" : "");
    if (ia == da.end() || ib == db.end()) {
      const bool only_b = ia == da.end();
      out += title + ": only in " + (only_b ? "B" : "A") + "\n";
      jdevices.push_back(Json{{"device", k.first}, {"only_in", only_b ? "b" : "a"}});
      continue;
    }
    std::string body;
    Json j = diff_device(*ia->second, *ib->second, body);
    if (!body.empty()) out += title + ":\n" + body;
    jdevices.push_back(std::move(j));
  }

  // Events of B recorded after A was taken.
  Json by_kind = Json::object();
  std::uint64_t newer = 0;
  bool complete = true;  // false: B's ring lost events recorded after A
  if (b.doc["events"].contains("items")) {
    const Json& items = b.doc["events"]["items"];
    complete = b.doc["events"]["lost"] == 0 ||
               (!items.empty() && items[0]["t_ns"].get<std::uint64_t>() <= ta);
    std::map<std::string, std::uint64_t> kinds;
    for (const Json& e : items) {
      if (e["t_ns"].get<std::uint64_t>() <= ta) continue;
      ++newer;
      ++kinds[e["kind"].get<std::string>()];
    }
    std::string list;
    for (const auto& [kind, n] : kinds) {
      by_kind[kind] = n;
      list += std::string(list.empty() ? "" : ", ") + kind + " " + std::to_string(n);
    }
    if (newer != 0) {
      out +=
          "events in B after A: " + std::string(complete ? "" : "at least ") +
          std::to_string(newer) + " (" + list + ")" +
          (complete ? ""
                    : "; B's ring of " + b.doc["events"]["capacity"].dump() + " lost older ones") +
          "\n";
    }
  }
  if (out.size() == header) out += "no differences\n";

  if (o.json) {
    Json j = Json::object();
    j["a"] = Json{{"origin", a.origin}, {"pid", a.doc["process"]["pid"]}, {"time_unix_ns", ta}};
    j["b"] = Json{{"origin", b.origin}, {"pid", b.doc["process"]["pid"]}, {"time_unix_ns", tb}};
    j["devices"] = std::move(jdevices);
    j["events_after_a"] =
        Json{{"count", newer}, {"complete", complete}, {"by_kind", std::move(by_kind)}};
    emit(o, j.dump() + "\n");
  } else {
    emit(o, out);
  }
  return kOk;
}

}  // namespace vmmctl
