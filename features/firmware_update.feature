@firmware_update @destructive @sim_only
Feature: A firmware update keeps every calibration
  The EEPROM has no version field: flashing firmware of another layout family reinterprets its bytes.
  The harness backs up first and restores by field name afterwards.

  @target_multispeq
  Scenario Outline: Update a <target> unit from <old> to <new>
    Given a <target> unit running <old>
    And the unit has a distinctive calibration
    When the firmware is updated to <new> through the harness
    Then a backup was filed before the update
    And every calibration field present in both versions is kept
    And the fields new in <new> are reported as left untouched

    Examples:
      | target    | old  | new  |
      | multispeq | 1.10 | 1.11 |
      | multispeq | 1.06 | 1.17 |
      | multispeq | 1.11 | 1.17 |

  @target_multispeq
  Scenario: Flashing without the harness scrambles the calibration
    Given a multispeq unit running 1.10
    And the unit has a distinctive calibration
    And I back up the unit
    When the firmware is flashed to 1.11 without a backup
    Then a new backup differs from the first in fields after the inserted PAR slopes
