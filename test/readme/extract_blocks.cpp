// Writes a translation unit that compiles every ```cpp block of a markdown file as written:
// each block's #include lines go to file scope, the rest becomes the body of a function
// that first runs the prelude (the names the blocks use, as a reader's trainer would have
// them) and afterwards the postlude (checks on what the block wrote). main() calls every block.
//   extract_blocks <markdown> <prelude> <postlude> <out.cpp>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

static std::string slurp(const char* path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(std::string("cannot read ") + path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

int main(int argc, char** argv) try {
  if (argc != 5) {
    std::cerr << "usage: extract_blocks <markdown> <prelude> <postlude> <out.cpp>\n";
    return 2;
  }
  std::istringstream md(slurp(argv[1]));
  const std::string prelude = slurp(argv[2]), postlude = slurp(argv[3]);
  std::vector<std::string> includes, bodies;
  std::string line, body;
  bool in = false;
  int lineno = 0, start = 0;
  while (std::getline(md, line)) {
    ++lineno;
    if (!in && line.rfind("```cpp", 0) == 0) {
      in = true;
      start = lineno;
      body = "#line " + std::to_string(lineno + 1) + " \"" + argv[1] + "\"\n";
    } else if (in && line.rfind("```", 0) == 0) {
      in = false;
      bodies.push_back(body);
    } else if (in && line.rfind("#include", 0) == 0) {
      includes.push_back(line);
      body += "\n";
    } else if (in) {
      body += line + "\n";
    }
  }
  if (in) throw std::runtime_error("a ```cpp block opened at line " + std::to_string(start) + " is not closed");
  if (bodies.empty()) throw std::runtime_error("no ```cpp block");
  std::ofstream out(argv[4], std::ios::binary);
  out << "// Generated from " << argv[1] << " by extract_blocks: do not edit.\n";
  for (const auto& i : includes) out << i << "\n";
  out << "#include <cmath>\n#include <cstdint>\n#include <cstdio>\n#include <exception>\n#include <vector>\n";
  for (std::size_t b = 0; b < bodies.size(); ++b) {
    out << "static bool readme_block_" << b << "() {\n"
        << prelude << "\n{\n"
        << bodies[b] << "}\n"
        << postlude << "\n}\n";
  }
  out << "int main() {\n  int failed = 0;\n";
  for (std::size_t b = 0; b < bodies.size(); ++b)
    out << "  try {\n    if (!readme_block_" << b << "()) { std::printf(\"block " << b
        << ": the postlude's check failed\\n\"); ++failed; }\n  } catch (const std::exception& e) {\n"
        << "    std::printf(\"block " << b << " threw: %s\\n\", e.what());\n    ++failed;\n  }\n";
  out << "  std::printf(\"%d of " << bodies.size() << " README blocks ran\\n\", " << bodies.size() << " - failed);\n"
      << "  return failed ? 1 : 0;\n}\n";
  return out ? 0 : 1;
} catch (const std::exception& e) {
  std::cerr << "extract_blocks: " << e.what() << "\n";
  return 1;
}
