// SPDX-License-Identifier: Apache-2.0
#include "common/flat_json.h"

#include <cctype>

namespace llm_datadist {
namespace {

class Cursor {
 public:
  explicit Cursor(const std::string &s) : s_(s) {}
  void SkipSpace() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool Eat(char c) {
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool AtEnd() {
    SkipSpace();
    return pos_ >= s_.size();
  }
  char Peek() {
    SkipSpace();
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }
  bool ParseString(std::string *out, std::string *error) {
    if (!Eat('"')) return Fail(error, "expected '\"'");
    out->clear();
    while (pos_ < s_.size() && s_[pos_] != '"') {
      char c = s_[pos_++];
      if (c == '\\') {
        if (pos_ >= s_.size()) break;
        char e = s_[pos_++];
        switch (e) {
          case 'n': c = '\n'; break;
          case 't': c = '\t'; break;
          case '"': case '\\': case '/': c = e; break;
          default: return Fail(error, std::string("unsupported escape \\") + e);
        }
      }
      out->push_back(c);
    }
    if (pos_ >= s_.size()) return Fail(error, "unterminated string");
    ++pos_;
    return true;
  }
  bool ParseValue(FlatJsonValue *out, std::string *error) {
    char c = Peek();
    if (c == '"') {
      out->kind = FlatJsonValue::Kind::kString;
      return ParseString(&out->text, error);
    }
    if (s_.compare(pos_, 4, "true") == 0 || s_.compare(pos_, 5, "false") == 0) {
      out->kind = FlatJsonValue::Kind::kBool;
      out->boolean = s_[pos_] == 't';
      pos_ += out->boolean ? 4 : 5;
      return true;
    }
    if (c == '-' || std::isdigit(static_cast<unsigned char>(c))) {
      out->kind = FlatJsonValue::Kind::kInteger;
      out->negative = c == '-';
      if (out->negative) ++pos_;
      size_t start = pos_;
      uint64_t value = 0;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
        uint64_t digit = static_cast<uint64_t>(s_[pos_] - '0');
        if (value > (UINT64_MAX - digit) / 10) return Fail(error, "integer out of range");
        value = value * 10 + digit;
        ++pos_;
      }
      if (pos_ == start) return Fail(error, "expected digits");
      if (pos_ < s_.size() && (s_[pos_] == '.' || s_[pos_] == 'e' || s_[pos_] == 'E'))
        return Fail(error, "expected an integer, got a fractional number");
      out->magnitude = value;
      return true;
    }
    if (c == '{' || c == '[') return Fail(error, "nested objects and arrays are not supported");
    return Fail(error, "unexpected character");
  }
  bool Fail(std::string *error, const std::string &what) {
    *error = what + " at offset " + std::to_string(pos_);
    return false;
  }

 private:
  const std::string &s_;
  size_t pos_ = 0;
};

}  // namespace

bool ParseFlatJsonObject(const std::string &json, std::map<std::string, FlatJsonValue> *out,
                         std::string *error) {
  Cursor cur(json);
  out->clear();
  if (!cur.Eat('{')) return cur.Fail(error, "expected a JSON object '{'");
  if (!cur.Eat('}')) {
    do {
      std::string key;
      if (!cur.ParseString(&key, error)) return false;
      if (!cur.Eat(':')) return cur.Fail(error, "expected ':'");
      FlatJsonValue value;
      if (!cur.ParseValue(&value, error)) return false;
      if (out->count(key) != 0) return cur.Fail(error, "duplicate key \"" + key + "\"");
      (*out)[key] = value;
    } while (cur.Eat(','));
    if (!cur.Eat('}')) return cur.Fail(error, "expected ',' or '}'");
  }
  if (!cur.AtEnd()) return cur.Fail(error, "trailing characters after the object");
  return true;
}

}  // namespace llm_datadist
