// The complete example in docs/plugin-guide-native.md is fixtures/invert.c, which the loader tests
// build and run; this keeps the two identical so the guide never shows code that does not work.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace sandpipe::test {
namespace {

std::string read_file(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(PluginGuide, NativeExampleIsTheTestedInvertFixture) {
  const std::filesystem::path root = SANDPIPE_SOURCE_ROOT;
  const std::string guide = read_file(root / "docs" / "plugin-guide-native.md");
  const std::string example = read_file(root / "tests" / "plugins-native" / "fixtures" / "invert.c");
  ASSERT_FALSE(example.empty());
  EXPECT_NE(guide.find("```c\n" + example + "```\n"), std::string::npos)
      << "paste tests/plugins-native/fixtures/invert.c into docs/plugin-guide-native.md";
}

}  // namespace
}  // namespace sandpipe::test
