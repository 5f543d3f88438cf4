//! Schedules: a project's cron expression and the original's day/hour/minute
//! fields, both read in the project's time zone, turned into "the latest slot
//! that is due".

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::store::validate::parse_cron;
use crate::store::Project;

/// The original's hour and minute lists (`"0,8,16"`, `"9-17"`) as cron fields.
/// Hours allow 24 there (meaning midnight); cron says 0.
fn cron_field(spec: &str, is_hours: bool) -> String {
    spec.split(',')
        .map(|part| {
            let part = part.trim();
            if is_hours && part == "24" {
                "0".to_string()
            } else if is_hours && part.ends_with("-24") {
                part.replace("-24", "-23")
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Every schedule of a project as cron expressions: its own cron, plus the
/// weekday and weekend fields of the original.
pub fn project_schedules(p: &Project) -> Result<Vec<Cron>, String> {
    let mut crons = Vec::new();
    if !p.schedule_cron.trim().is_empty() {
        crons.push(parse_cron(&p.schedule_cron)?);
    }
    fn days(flags: &[(bool, &'static str)]) -> Vec<&'static str> {
        flags.iter().filter(|(on, _)| *on).map(|(_, d)| *d).collect()
    }
    let weekdays =
        days(&[(p.monday, "MON"), (p.tuesday, "TUE"), (p.wednesday, "WED"), (p.thursday, "THU"), (p.friday, "FRI")]);
    let weekend = days(&[(p.saturday, "SAT"), (p.sunday, "SUN")]);
    for (days, hours, minutes) in [
        (weekdays, &p.weekday_start_hours, &p.weekday_start_minutes),
        (weekend, &p.weekend_start_hours, &p.weekend_start_minutes),
    ] {
        if days.is_empty() || hours.trim().is_empty() {
            continue;
        }
        let minutes = if minutes.trim().is_empty() { "0".to_string() } else { cron_field(minutes, false) };
        let expr = format!("{minutes} {} * * {}", cron_field(hours, true), days.join(","));
        crons.push(parse_cron(&expr)?);
    }
    Ok(crons)
}

/// The project's time zone (UTC when blank).
pub fn project_zone(p: &Project) -> Result<Tz, String> {
    let name = if p.schedule_timezone.trim().is_empty() { "UTC" } else { p.schedule_timezone.trim() };
    name.parse::<Tz>().map_err(|_| format!("unknown time zone '{name}'"))
}

/// The latest slot at or before `now` that is later than `since`, if any.
pub fn latest_due(crons: &[Cron], zone: Tz, since: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local_now = now.with_timezone(&zone);
    crons
        .iter()
        .filter_map(|c| c.find_previous_occurrence(&local_now, true).ok())
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| *t > since && *t <= now)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn cron_expressions_are_checked() {
        assert!(parse_cron("*/5 * * * *").is_ok());
        assert!(parse_cron("* * *").unwrap_err().contains("5"));
        assert!(parse_cron("61 * * * *").is_err());
    }

    #[test]
    fn latest_slot_in_a_time_zone() {
        let crons = vec![parse_cron("30 9 * * *").unwrap()];
        let zone: Tz = "Europe/Paris".parse().unwrap();
        // 2026-01-15 08:31 UTC is 09:31 in Paris (UTC+1): the 09:30 slot is due.
        let now = utc(2026, 1, 15, 8, 31);
        assert_eq!(latest_due(&crons, zone, now - chrono::Duration::minutes(10), now), Some(utc(2026, 1, 15, 8, 30)));
        // Already handled: nothing newer than `since`.
        assert_eq!(latest_due(&crons, zone, utc(2026, 1, 15, 8, 30), now), None);
    }

    #[test]
    fn the_originals_day_hour_minute_fields_become_crons() {
        let p = Project {
            monday: true,
            wednesday: true,
            weekday_start_hours: "8,16".into(),
            weekday_start_minutes: "0,30".into(),
            saturday: true,
            weekend_start_hours: "24".into(),
            ..Default::default()
        };
        let crons = project_schedules(&p).unwrap();
        assert_eq!(crons.len(), 2);
        let wed_1630 = utc(2026, 1, 14, 16, 30); // a Wednesday
        let got = latest_due(&crons, chrono_tz::UTC, wed_1630 - chrono::Duration::minutes(1), wed_1630);
        assert_eq!(got, Some(wed_1630));
        let tue_1630 = utc(2026, 1, 13, 16, 30);
        assert_eq!(latest_due(&crons, chrono_tz::UTC, tue_1630 - chrono::Duration::minutes(1), tue_1630), None);
        let sat_midnight = utc(2026, 1, 17, 0, 0);
        assert!(latest_due(&crons, chrono_tz::UTC, sat_midnight - chrono::Duration::minutes(1), sat_midnight).is_some());
    }
}
