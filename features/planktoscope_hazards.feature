@target_planktoscope @compatibility @destructive
Feature: PlanktoScope cross-release restores follow the hazard rules
  A bundle made under one PlanktoScope release is restored onto another. Each hazard of the target spec
  (§15) is either a plain restore, a migration of keys before upload, a warning, or a refusal before anything
  is written; some refusals give way to --force.

  Scenario Outline: <hz>: a <source> bundle with <edit> onto <dest> over <link>
    Given a planktoscope unit running <dest> reached over <link>
    And a <source> planktoscope bundle for this unit with <edit>
    When I restore that backup onto the unit
    Then the restore is <outcome> for <hz>
    And the unit's <file> <check>

    Examples:
      | hz    | source                    | edit                      | dest                  | link | outcome               | file          | check                                  |
      | HZ-01 | v2.3                      | none                      | v2024.0.0             | http | migrated              | hardware.json | has red_gain=2                         |
      | HZ-01 | v2.3                      | none                      | v2.3                  | ssh  | warned                | hardware.json | has wb_red_gain=2                      |
      | HZ-02 | v2025.0.0/v2.6            | none                      | v2026                 | ssh  | migrated              | hardware.json | has hat_version=1.2                    |
      | HZ-13 | v2025.0.0/v2.6            | none                      | v2026/v3.0            | ssh  | refused unless forced | hardware.json | has hat_version=3.3                    |
      | HZ-03 | v2024.0.0/adafruithat     | none                      | v2026                 | ssh  | refused               | hardware.json | has hat_version=1.2                    |
      | HZ-04 | v2026                     | none                      | v2025.0.0             | http | warned                | hardware.json | has hat_version=1.2                    |
      | HZ-05 | v2024.0.0/v2.6            | stepper_reverse true      | v2025.0.0             | http | warned                | hardware.json | has stepper_reverse=true               |
      | HZ-06 | v2026                     | none                      | v2024.0.0             | http | warned                | config.json   | has user_setup=false                   |
      | HZ-07 | v2025.0.0/v2.6            | none                      | v2026                 | ssh  | migrated              | config.json   | has user_setup=false                   |
      | HZ-08 | v2024.0.0                 | recorded hardware v2.5    | v2024.0.0             | http | migrated              | config.json   | has acq_instrument="PlanktoScope v2.5" |
      | HZ-08 | v2024.0.0                 | modified calibration      | v2025.0.0             | http | refused unless forced | hardware.json | has pump_steps_per_ml=1234             |
      | HZ-08 | v2024.0.0                 | none                      | v2024.0.0             | http | warned                | config.json   | has acq_instrument=null                |
      | HZ-10 | v2024.0.0/v2.6            | only red_gain             | v2024.0.0/v2.6        | http | refused unless forced | hardware.json | has no blue_gain                       |
      | HZ-11 | v2024.0.0/v2.6            | red_gain 40               | v2024.0.0/v2.6        | http | refused               | hardware.json | has red_gain=2.4                       |
      | HZ-11 | v2024.0.0/v2.6            | red_gain "high"           | v2024.0.0/v2.6        | http | refused unless forced | hardware.json | has red_gain="high"                    |
      | HZ-12 | v2024.0.0/v2.6            | no process_pixel_fixed    | v2024.0.0/v2.6        | http | warned                | hardware.json | has no process_pixel_fixed             |
      | HZ-13 | v2025.0.0/v2.6            | none                      | v2025.0.0/adafruithat | http | refused unless forced | config.json   | has acq_instrument="PlanktoScope v2.6" |
      | HZ-14 | v2025.0.0/v2.6            | none                      | v2026                 | http | refused unless forced | config.json   | has user_setup=false                   |
      | HZ-15 | v2024.0.0/v2.6            | none                      | v2.3                  | http | refused               | hardware.json | is as it was                           |
      | HZ-25 | v2026                     | calibration.json          | v2025.0.0             | http | warned                | hardware.json | has hat_type="planktoscope"            |
      | HZ-26 | v2024.0.0/v2.6            | generic keys              | v2024.0.0/v2.6        | http | refused               | config.json   | has no generic_path                    |

  Scenario: HZ-22 and HZ-23: after /api/reset, a v2026 unit takes both files back, not one
    Given a planktoscope unit running v2026 reached over ssh
    And the unit's settings were reset through its API
    And a v2026 planktoscope bundle for this unit with hardware.json only
    When I restore that backup onto the unit
    Then the restore is refused unless forced for HZ-22
    And the unit's hardware.json has hat_version=1.2
    And the restore warns "HZ-23"
