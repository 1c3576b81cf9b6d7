function bytes = hcMemoryBudget(budget)
    % HCMEMORYBUDGET  The 'MemoryBudget' option in bytes (internal).
    %   BYTES = HCMEMORYBUDGET(BUDGET): a positive number of bytes, or text such as '2GB', '512MB',
    %   '1.5e9' (units as the Python side: KB/MB/GB/TB powers of 1000, KiB/MiB/GiB/TiB of
    %   1024); empty: half the memory the system reports as available (MATLAB's memory function on
    %   Windows, /proc/meminfo on Linux), else 2 GB.
    if isempty(budget)
        bytes = 2e9;
        try
            if ispc() && exist('memory', 'file')
                user = memory();
                bytes = user.MemAvailableAllArrays / 2;
            elseif exist('/proc/meminfo', 'file')
                meminfo = fileread('/proc/meminfo');
                kb = regexp(meminfo, 'MemAvailable:\s*(\d+)', 'tokens', 'once');
                if ~isempty(kb)
                    bytes = str2double(kb{1}) * 1024 / 2;
                end
            end
        catch
            bytes = 2e9;
        end
        return
    end
    if isnumeric(budget)
        bytes = double(budget);
        return
    end
    tokens = regexp(lower(strtrim(char(budget))), '^([0-9.e+-]+)\s*([a-z]*)$', 'tokens', 'once');
    units = {'', 'b', 'k', 'kb', 'm', 'mb', 'g', 'gb', 't', 'tb', 'kib', 'mib', 'gib', 'tib'};
    scales = [1, 1, 1e3, 1e3, 1e6, 1e6, 1e9, 1e9, 1e12, 1e12, 2^10, 2^20, 2^30, 2^40];
    if isempty(tokens)
        k = [];
    else
        k = find(strcmp(tokens{2}, units), 1);
    end
    if isempty(k) || isnan(str2double(tokens{1})) || str2double(tokens{1}) <= 0
        error('hessiancore:invalidOption', ['MemoryBudget must be bytes or text such as ''2GB'' or ', ...
                                            '''512MiB''; got ''%s'''], char(budget));
    end
    bytes = str2double(tokens{1}) * scales(k);
end
