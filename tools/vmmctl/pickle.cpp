// The plain-data pickle reader (see pickle.hpp). Values are built as a small
// tree of shared nodes first (the memo may refer to a dict or list that is
// still being filled), then turned into JSON with the depth and size bounds.
#include "tools/vmmctl/pickle.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tools/vmmctl/exit_codes.hpp"

namespace vmmctl {

namespace {

struct Node;
using NodePtr = std::shared_ptr<Node>;

struct Node {
  enum class Kind { none, boolean, integer, real, string, list, tuple, dict, mark };
  Kind kind = Kind::none;
  bool b = false;
  long long i = 0;
  double d = 0;
  std::string s;
  std::vector<NodePtr> items;                      // list, tuple
  std::vector<std::pair<NodePtr, NodePtr>> pairs;  // dict, in order
};

// At most this many values are read from one pickle (about 3.5 GB of
// nodes): far more than a snapshot of 100000 trace entries with their frames.
constexpr std::size_t kMaxNodes = std::size_t{1} << 24;

class Reader {
 public:
  Reader(std::string_view text, const std::string& origin) : t_(text), origin_(origin) {}
  // A hostile pickle can make a list that holds itself: every node's
  // children are dropped here, so no cycle outlives the reader.
  ~Reader() {
    for (const NodePtr& n : all_) {
      n->items.clear();
      n->pairs.clear();
    }
  }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  NodePtr run() {
    for (;;) {
      const std::size_t at = pos_;
      const auto op = static_cast<unsigned char>(byte());
      switch (op) {
        case 0x80: byte(); break;             // PROTO n
        case 0x95: take(8); break;            // FRAME (length only)
        case '.': return pop(at);             // STOP
        case '(': push(make(Node::Kind::mark)); break;
        case '}': push(make(Node::Kind::dict)); break;
        case ']': push(make(Node::Kind::list)); break;
        case ')': push(make(Node::Kind::tuple)); break;
        case 'N': push(make(Node::Kind::none)); break;
        case 0x88: push_bool(true); break;
        case 0x89: push_bool(false); break;
        case 'K': push_int(static_cast<unsigned char>(byte())); break;
        case 'M': push_int(static_cast<long long>(le(2))); break;
        case 'J': push_int(static_cast<std::int32_t>(le(4))); break;
        case 0x8a: push_long(static_cast<unsigned char>(byte()), at); break;
        case 0x8b: push_long(le(4), at); break;
        case 'G': push_float(); break;
        case 0x8c: push_string(static_cast<unsigned char>(byte())); break;
        case 'X': push_string(le(4)); break;
        case 0x8d: push_string(le(8)); break;
        case 0x94: memo_[memo_.size()] = top(at); break;  // MEMOIZE
        case 'q': memo_[static_cast<unsigned char>(byte())] = top(at); break;
        case 'r': memo_[le(4)] = top(at); break;
        case 'h': push(get(static_cast<unsigned char>(byte()), at)); break;
        case 'j': push(get(le(4), at)); break;
        case 'a': append(at, 1); break;
        case 'e': append(at, 0); break;
        case 's': set_items(at, 1); break;
        case 'u': set_items(at, 0); break;
        case 't': tuple(at, -1); break;
        case 0x85: tuple(at, 1); break;
        case 0x86: tuple(at, 2); break;
        case 0x87: tuple(at, 3); break;
        default: {
          char code[8];
          std::snprintf(code, sizeof code, "0x%02x", op);
          fail("pickle opcode " + std::string(code) + " at offset " + std::to_string(at) +
               " is not plain data (vmmctl reads PyTorch memory snapshots: dicts, lists, "
               "strings and numbers, and runs nothing)");
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw CliError(kMalformed, origin_ + ": " + what);
  }
  char byte() {
    if (pos_ >= t_.size()) fail("the pickle ends early (truncated?)");
    return t_[pos_++];
  }
  std::string_view take(std::size_t n) {
    if (n > t_.size() - pos_) fail("the pickle ends early (truncated?)");
    const std::string_view out = t_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  std::uint64_t le(std::size_t n) {
    const std::string_view b = take(n);
    std::uint64_t v = 0;
    for (std::size_t k = 0; k < n; ++k) v |= std::uint64_t{static_cast<unsigned char>(b[k])} << (8 * k);
    return v;
  }
  void push(NodePtr n) { stack_.push_back(std::move(n)); }
  NodePtr top(std::size_t at) const {
    if (stack_.empty()) fail("memo of an empty stack at offset " + std::to_string(at));
    return stack_.back();
  }
  NodePtr pop(std::size_t at) {
    NodePtr n = top(at);
    stack_.pop_back();
    return n;
  }
  NodePtr get(std::uint64_t key, std::size_t at) const {
    auto it = memo_.find(key);
    if (it == memo_.end()) fail("unknown memo entry at offset " + std::to_string(at));
    return it->second;
  }
  void push_bool(bool v) {
    auto n = make(Node::Kind::boolean);
    n->b = v;
    push(n);
  }
  void push_int(long long v) {
    auto n = make(Node::Kind::integer);
    n->i = v;
    push(n);
  }
  void push_long(std::uint64_t bytes, std::size_t at) {
    if (bytes > 8) fail("an integer wider than 64 bits at offset " + std::to_string(at));
    const std::uint64_t raw = bytes == 0 ? 0 : le(static_cast<std::size_t>(bytes));
    std::uint64_t v = raw;
    if (bytes != 0 && bytes < 8 && (raw >> (8 * bytes - 1)) != 0) v |= ~std::uint64_t{0} << (8 * bytes);
    push_int(static_cast<long long>(v));
  }
  void push_float() {
    const std::string_view b = take(8);
    std::uint64_t bits = 0;
    for (std::size_t k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<unsigned char>(b[k]);
    auto n = make(Node::Kind::real);
    std::memcpy(&n->d, &bits, sizeof bits);
    push(n);
  }
  void push_string(std::uint64_t n) {
    if (n > t_.size()) fail("a string longer than the input");
    const std::size_t at = pos_;
    const std::string_view bytes = take(static_cast<std::size_t>(n));
    if (!valid_utf8(bytes)) fail("a string that is not UTF-8 at offset " + std::to_string(at));
    auto s = make(Node::Kind::string);
    s->s = std::string(bytes);
    push(s);
  }
  // Python writes str as UTF-8; anything else would not survive as JSON.
  // Well-formed UTF-8 (RFC 3629), as JSON needs it: no overlong forms, no
  // surrogates (U+D800..U+DFFF, which Python's surrogatepass writes), nothing
  // above U+10FFFF.
  static bool valid_utf8(std::string_view b) {
    for (std::size_t i = 0; i < b.size();) {
      const auto c = static_cast<unsigned char>(b[i]);
      if (c < 0x80) {
        ++i;
        continue;
      }
      const std::size_t len = c >= 0xc2 && c <= 0xdf ? 2 : (c >> 4) == 0xe ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
      if (len == 0 || i + len > b.size()) return false;
      for (std::size_t k = 1; k < len; ++k) {
        if ((static_cast<unsigned char>(b[i + k]) & 0xc0) != 0x80) return false;
      }
      const auto c1 = static_cast<unsigned char>(b[i + 1]);
      if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 >= 0xa0) || (c == 0xf0 && c1 < 0x90) ||
          (c == 0xf4 && c1 >= 0x90)) {
        return false;
      }
      i += len;
    }
    return true;
  }
  // The items above the topmost mark (which is removed).
  std::vector<NodePtr> since_mark(std::size_t at) {
    std::size_t m = stack_.size();
    while (m > 0 && stack_[m - 1]->kind != Node::Kind::mark) --m;
    if (m == 0) fail("no mark on the stack at offset " + std::to_string(at));
    std::vector<NodePtr> out(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m - 1);
    return out;
  }
  void append(std::size_t at, int one) {
    std::vector<NodePtr> items;
    if (one) {
      items.push_back(pop(at));
    } else {
      items = since_mark(at);
    }
    NodePtr list = top(at);
    if (list->kind != Node::Kind::list) fail("append to a non-list at offset " + std::to_string(at));
    list->items.insert(list->items.end(), items.begin(), items.end());
  }
  void set_items(std::size_t at, int one) {
    std::vector<NodePtr> items;
    if (one) {
      NodePtr v = pop(at);
      NodePtr k = pop(at);
      items = {k, v};
    } else {
      items = since_mark(at);
    }
    if (items.size() % 2 != 0) fail("an odd number of dict items at offset " + std::to_string(at));
    NodePtr dict = top(at);
    if (dict->kind != Node::Kind::dict) fail("set items of a non-dict at offset " + std::to_string(at));
    for (std::size_t k = 0; k < items.size(); k += 2) dict->pairs.emplace_back(items[k], items[k + 1]);
  }
  void tuple(std::size_t at, int n) {
    std::vector<NodePtr> items;
    if (n < 0) {
      items = since_mark(at);
    } else {
      for (int k = 0; k < n; ++k) items.insert(items.begin(), pop(at));
    }
    auto t = make(Node::Kind::tuple);
    t->items = std::move(items);
    push(t);
  }

  std::string_view t_;
  const std::string& origin_;
  std::size_t pos_ = 0;
  std::vector<NodePtr> stack_;
  std::unordered_map<std::uint64_t, NodePtr> memo_;
  std::vector<NodePtr> all_;

  NodePtr make(Node::Kind kind) {
    // Each value costs about 200 bytes here: bounded before it is made.
    if (all_.size() >= kMaxNodes) {
      fail("the pickle holds more than " + std::to_string(kMaxNodes) +
           " values (vmmctl's limit for PyTorch snapshots)");
    }
    auto n = std::make_shared<Node>();
    n->kind = kind;
    all_.push_back(n);
    return n;
  }
};

class ToJson {
 public:
  ToJson(const std::string& origin, std::size_t max_values, std::size_t max_bytes)
      : origin_(origin), left_(max_values), bytes_left_(max_bytes) {}

  Json convert(const Node& n, int depth) {
    if (depth > kMaxDepth) {
      throw CliError(kMalformed, origin_ + ": the pickle nests deeper than " +
                                     std::to_string(kMaxDepth) + " levels");
    }
    // Every value, and every string's bytes, is charged before it is made:
    // a string shared a million times over costs a million copies.
    const std::size_t cost = 16 + n.s.size();
    if (left_ == 0 || bytes_left_ < cost) {
      throw CliError(kMalformed, origin_ + ": the pickle holds too many values (shared too often?)");
    }
    --left_;
    bytes_left_ -= cost;
    switch (n.kind) {
      case Node::Kind::none: return nullptr;
      case Node::Kind::boolean: return n.b;
      case Node::Kind::integer: return n.i;
      case Node::Kind::real: return n.d;
      case Node::Kind::string: return n.s;
      case Node::Kind::list:
      case Node::Kind::tuple: {
        Json a = Json::array();
        for (const NodePtr& c : n.items) a.push_back(convert(*c, depth + 1));
        return a;
      }
      case Node::Kind::dict: {
        Json o = Json::object();
        for (const auto& [k, v] : n.pairs) {
          const Json key = convert(*k, depth + 1);
          o[key.is_string() ? key.get<std::string>() : key.dump()] = convert(*v, depth + 1);
        }
        return o;
      }
      case Node::Kind::mark: break;
    }
    throw CliError(kMalformed, origin_ + ": a mark left in the pickle's result");
  }

 private:
  const std::string& origin_;
  std::size_t left_;
  std::size_t bytes_left_;
};

}  // namespace

bool looks_like_pickle(std::string_view text) {
  return text.size() >= 2 && static_cast<unsigned char>(text[0]) == 0x80 &&
         static_cast<unsigned char>(text[1]) >= 2 && static_cast<unsigned char>(text[1]) <= 5;
}

Json read_pickle(std::string_view text, const std::string& origin, std::size_t max_values) {
  if (!looks_like_pickle(text)) {
    throw CliError(kMalformed, origin + ": not a pickle of protocol 2 to 5");
  }
  Reader reader(text, origin);
  const NodePtr root = reader.run();
  // Plain data makes a few values per byte, shared memo entries included;
  // far more means sharing piled on sharing.
  const std::size_t bound = std::min(max_values, std::max<std::size_t>(1 << 20, text.size() * 16));
  const std::size_t bytes = std::max<std::size_t>(std::size_t{64} << 20, text.size() * 32);
  return ToJson(origin, bound, bytes).convert(*root, 0);
}

}  // namespace vmmctl
