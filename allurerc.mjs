// Allure 3 configuration for `harness report`: one self-contained HTML file a QA engineer can mail around.
import { defineConfig } from "allure";

export default defineConfig({
  name: "Bench harness: backup and restore",
  output: "./reports/html",
  plugins: {
    awesome: { options: { singleFile: true, reportName: "Bench harness: backup and restore" } },
  },
});
