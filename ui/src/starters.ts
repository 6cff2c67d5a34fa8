// A starter program per language id (the ids served by GET /languages).
// Each prints a greeting, then reads lines until end of input, so it shows
// both output and typed input; Ctrl-D (or the EOF button) ends it.

export const STARTERS: Readonly<Record<string, string>> = {
  python: `import sys

print("Hello from Python!")
print("Type a line and press Enter; Ctrl-D ends the input.")
for line in sys.stdin:
    print("You typed:", line.rstrip("\\n"))
print("Bye!")
`,
  javascript: `console.log("Hello from JavaScript!");
console.log("Type a line and press Enter; Ctrl-D ends the input.");

const readline = require("node:readline");
const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => console.log("You typed:", line));
rl.on("close", () => console.log("Bye!"));
`,
  java: `import java.util.Scanner;

public class Main {
    public static void main(String[] args) {
        System.out.println("Hello from Java!");
        System.out.println("Type a line and press Enter; Ctrl-D ends the input.");
        Scanner in = new Scanner(System.in);
        while (in.hasNextLine()) {
            System.out.println("You typed: " + in.nextLine());
        }
        System.out.println("Bye!");
    }
}
`,
  cpp: `#include <iostream>
#include <string>

int main() {
    std::cout << "Hello from C++!" << std::endl;
    std::cout << "Type a line and press Enter; Ctrl-D ends the input." << std::endl;
    std::string line;
    while (std::getline(std::cin, line)) {
        std::cout << "You typed: " << line << std::endl;
    }
    std::cout << "Bye!" << std::endl;
}
`,
  ruby: `puts "Hello from Ruby!"
puts "Type a line and press Enter; Ctrl-D ends the input."
$stdin.each_line do |line|
  puts "You typed: #{line.chomp}"
end
puts "Bye!"
`,
};

export function starterFor(language: string): string {
  return STARTERS[language] ?? "";
}
