// vmmctl html: the snapshot embedded in one self-contained page
// (html/page.html: its own CSS and JavaScript, nothing fetched) that draws
// each device's address-space map, memory over time from the event ring, and
// the recent events. The JSON goes into a <script type="application/json">
// element with every '<' written as \u003c, so no text in it can end the
// element.
#include <cstdio>
#include <string>

#include "tools/vmmctl/commands.hpp"
#include "tools/vmmctl/exit_codes.hpp"

namespace vmmctl {

extern const char* const kHtmlPage;

namespace {

constexpr std::string_view kPlaceholder = "__VMM_SNAPSHOT_JSON__";

std::string script_safe(const std::string& json) {
  std::string out;
  out.reserve(json.size());
  for (char c : json) {
    if (c == '<') {
      out += "\\u003c";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

int cmd_html(const Options& o) {
  if (!o.output) throw CliError(kUsage, "vmmctl html needs -o FILE (the page to write)");
  const Snapshot s = load_snapshot(o.args.empty() ? "" : o.args[0], o.source, "snapshot");
  std::string page = kHtmlPage;
  const std::size_t at = page.find(kPlaceholder);
  if (at == std::string::npos)
    throw CliError(kError, "the page template has no snapshot placeholder");
  page.replace(at, kPlaceholder.size(), script_safe(s.doc.dump()));
  emit(o, page);

  std::size_t regions = 0;
  for (const Json& d : s.doc["devices"]) regions += d.contains("regions") ? d["regions"].size() : 0;
  if (o.json) {
    const Json j{{"output", *o.output},
                 {"bytes", page.size()},
                 {"devices", s.doc["devices"].size()},
                 {"regions", regions}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("wrote %s (%zu bytes): %zu region(s) on %zu device(s) from %s\n", o.output->c_str(),
                page.size(), regions, s.doc["devices"].size(), s.origin.c_str());
  }
  return kOk;
}

}  // namespace vmmctl
